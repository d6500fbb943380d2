package e2e

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/resolve"
)

// TestPrometheusFiguresAfterARun reads the exporter's output after a run on
// two real databases: applied counts equal the writes made, lag within a
// bound, the DLQ depth equal to the entries, and a drift warning after a
// column is added on one side only.
func TestPrometheusFiguresAfterARun(t *testing.T) {
	t.Parallel()
	p := startPair(t, 100, resolve.DeadLetterAll())
	// b rejects one value a writes.
	exec(t, p.b.Pool, `ALTER TABLE customers ADD CONSTRAINT no_blocked CHECK (status <> 'blocked')`)
	for i := 1; i <= 40; i++ {
		exec(t, p.a.Pool, `UPDATE customers SET name = 'a' || $1::text, updated_at = clock_timestamp() WHERE id = $1`, i)
	}
	for i := 41; i <= 70; i++ {
		exec(t, p.b.Pool, `UPDATE customers SET email = 'b' || $1::text, updated_at = clock_timestamp() WHERE id = $1`, i)
	}
	exec(t, p.a.Pool, `UPDATE customers SET status = 'blocked' WHERE id = 99`)
	// A column on a only, then a write that carries it.
	exec(t, p.a.Pool, `ALTER TABLE customers ADD COLUMN tier text`)
	exec(t, p.a.Pool, `UPDATE customers SET tier = 'gold', name = 'gold' WHERE id = 100`)
	// A column dropped on a only: b keeps it, nothing updates it any more.
	exec(t, p.a.Pool, `ALTER TABLE customers DROP COLUMN visits`)
	exec(t, p.a.Pool, `UPDATE customers SET name = 'no visits' WHERE id = 98`)
	p.waitQuiet(t, 72)

	reg := prometheus.NewRegistry()
	reg.MustRegister(p.events.Prometheus)
	sum := func(name string, labels map[string]string) float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		var n float64
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metric:
			for _, m := range mf.GetMetric() {
				for k, v := range labels {
					if !hasLabel(m, k, v) {
						continue metric
					}
				}
				switch {
				case m.Counter != nil:
					n += m.Counter.GetValue()
				case m.Gauge != nil:
					n += m.Gauge.GetValue()
				}
			}
		}
		return n
	}
	require.Equal(t, 42.0, sum("duplex_changes_applied_total", map[string]string{"direction": "a_to_b"}), "40 updates and the two drifting ones")
	require.Equal(t, 30.0, sum("duplex_changes_applied_total", map[string]string{"direction": "b_to_a"}))
	for _, d := range []string{"a_to_b", "b_to_a"} {
		lag := sum("duplex_sync_lag_seconds", map[string]string{"direction": d})
		require.Greater(t, lag, 0.0)
		require.Less(t, lag, 10.0, "lag %s", d)
	}
	entries, total, err := p.dlq.List(t.Context(), dlq.Filter{Status: dlq.StatusPending})
	require.NoError(t, err)
	require.Equal(t, 1, total, "the rejected value: %+v", entries)
	require.Equal(t, float64(total), sum("duplex_dlq_depth", nil))
	require.Equal(t, 1.0, sum("duplex_dead_letters_total", map[string]string{"direction": "a_to_b", "reason": "permanent_error"}))
	require.Equal(t, 1.0, sum("duplex_schema_drift_total", map[string]string{"direction": "a_to_b", "table": "public.customers", "field": "tier", "missing_on": "target"}))
	require.Equal(t, 1.0, sum("duplex_schema_drift_total", map[string]string{"direction": "a_to_b", "table": "public.customers", "field": "visits", "missing_on": "source"}))
	n, err := testutil.GatherAndCount(reg, "duplex_apply_lag_seconds")
	require.NoError(t, err)
	require.Equal(t, 2, n, "a lag histogram per direction")
	var name string
	require.NoError(t, p.b.Pool.QueryRow(t.Context(), `SELECT name FROM customers WHERE id = 100`).Scan(&name))
	require.Equal(t, "gold", name, "the drifting change is applied without the unknown field")
	t.Logf("applied a_to_b=42 b_to_a=30, lag a_to_b=%.3fs b_to_a=%.3fs, dlq depth %d",
		sum("duplex_sync_lag_seconds", map[string]string{"direction": "a_to_b"}),
		sum("duplex_sync_lag_seconds", map[string]string{"direction": "b_to_a"}), total)
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}
