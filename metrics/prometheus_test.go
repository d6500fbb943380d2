package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
	"github.com/duplexsync/duplex/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type sink struct{ n int }

func (s *sink) Put(context.Context, *duplex.DeadLetter) error { s.n++; return nil }

// TestMetricsAfterARun runs a one-way sync on in-memory databases and reads
// the figures back from the Prometheus registry.
func TestMetricsAfterARun(t *testing.T) {
	t.Parallel()
	tbl := duplex.Table{Schema: "public", Name: "customers"}
	a, b := memdb.New("a"), memdb.New("b")
	for _, db := range []*memdb.DB{a, b} {
		require.NoError(t, db.CreateTable(tbl, memdb.TableOptions{Key: []string{"id"}, Columns: []string{"id", "name"}}))
	}
	for i := range 25 {
		require.NoError(t, a.Insert(tbl, duplex.Values{"id": int64(i), "name": "x"}))
	}
	// One same-field conflict: b and a both rename row 0 after it was synced.
	dlq := &sink{}
	m := metrics.New(metrics.Config{
		Depth: func(context.Context) ([]metrics.DepthRow, error) {
			return []metrics.DepthRow{{Direction: "a_to_b", Table: tbl.String(), Reason: "conflict", Count: dlq.n}}, nil
		},
		Slots: map[string]metrics.RetainedFunc{"duplex_demo_a": func(context.Context) (int64, error) { return 4096, nil }},
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	run := func() {
		p, err := duplex.NewPipeline(&duplex.Config{
			Name: "demo", Direction: duplex.Direction{From: "a", To: "b"},
			Source: a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true}), Target: b.Applier("duplex"),
			DeadLetters: dlq, Observer: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		require.NoError(t, p.Run(ctx))
	}
	run()
	key0 := duplex.Key{{Name: "id", Value: int64(0)}}
	require.NoError(t, b.Update(tbl, key0, duplex.Values{"name": "from b"}))
	require.NoError(t, a.Update(tbl, key0, duplex.Values{"name": "from a"}))
	run()

	require.Equal(t, 25.0, testutil.ToFloat64(m.Collectors("applied", "a_to_b", tbl.String())))
	require.Equal(t, 1.0, testutil.ToFloat64(m.Collectors("conflicts", "a_to_b", tbl.String(), "update_update", "dead_lettered")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.Collectors("dead", "a_to_b", tbl.String(), "conflict")))
	require.Greater(t, m.Lag("a_to_b"), time.Duration(0))
	n, err := testutil.GatherAndCount(reg, "duplex_apply_lag_seconds")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP duplex_dlq_depth Pending dead-letter entries.
# TYPE duplex_dlq_depth gauge
duplex_dlq_depth{direction="a_to_b",reason="conflict",table="public.customers"} 1
# HELP duplex_slot_retained_wal_bytes WAL bytes a replication slot holds back on the server.
# TYPE duplex_slot_retained_wal_bytes gauge
duplex_slot_retained_wal_bytes{slot="duplex_demo_a"} 4096
`), "duplex_dlq_depth", "duplex_slot_retained_wal_bytes"))
	// One conflict among 26 changes decided (25 applied, 1 dead-lettered).
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP duplex_conflict_rate_per_1000_changes Conflicts per 1,000 changes decided (applied, no-op or dead-lettered) since the process started.
# TYPE duplex_conflict_rate_per_1000_changes gauge
duplex_conflict_rate_per_1000_changes{direction="a_to_b"} 38.46153846153846
`), "duplex_conflict_rate_per_1000_changes"))
}
