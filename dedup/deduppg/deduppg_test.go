package deduppg_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dedup/deduppg"
	"github.com/duplexsync/duplex/dedup/deduptest"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/testenv"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	deduptest.Run(t, deduptest.Features{Persistent: true}, func(t *testing.T, ns string) duplex.Deduper {
		d, err := deduppg.New(t.Context(), db.Pool, deduppg.Config{Sync: "deduptest", Target: ns})
		require.NoError(t, err)
		return d
	})
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	_, err := deduppg.New(t.Context(), nil, deduppg.Config{})
	require.Error(t, err)
	require.True(t, duplex.IsPermanent(err))
	for _, field := range []string{"pool", "Config.Sync", "Config.Target"} {
		require.ErrorContains(t, err, field)
	}
}

// TestLedgerSharedWithApplier checks that the Deduper reads what an applier
// records in its own apply transactions (only once they commit), and that
// marking an id the applier recorded is a no-op.
func TestLedgerSharedWithApplier(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	const schema = "sync_state"
	d, err := deduppg.New(ctx, db.Pool, deduppg.Config{Sync: "s", Target: "b", Schema: schema})
	require.NoError(t, err)
	applied := pgstate.Names(schema).Applied

	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	_, err = tx.Exec(ctx, "INSERT INTO "+applied+" (sync, target, change_id) VALUES ('s', 'b', 'c1'), ('s', 'b', 'c2')")
	require.NoError(t, err)
	require.Equal(t, []bool{false, false}, seen(t, d, "c1", "c2"), "an uncommitted apply is not seen")
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, []bool{true, true, false}, seen(t, d, "c1", "c2", "c3"))

	// A rolled-back apply never shows.
	tx2, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx2.Exec(ctx, "INSERT INTO "+applied+" (sync, target, change_id) VALUES ('s', 'b', 'c3')")
	require.NoError(t, err)
	require.NoError(t, tx2.Rollback(ctx))
	require.Equal(t, []bool{false}, seen(t, d, "c3"))

	// Mark records the rest (no-ops, dead letters) and ignores what the
	// applier recorded.
	require.NoError(t, d.Mark(ctx, []string{"c2", "c3", "c3"}))
	require.Equal(t, []bool{true, true, true}, seen(t, d, "c1", "c2", "c3"))
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT count(*) FROM "+applied).Scan(&n))
	require.Equal(t, 3, n)

	// Another target or sync has its own ledger.
	other, err := deduppg.New(ctx, db.Pool, deduppg.Config{Sync: "s", Target: "a", Schema: schema})
	require.NoError(t, err)
	require.Equal(t, []bool{false, false, false}, seen(t, other, "c1", "c2", "c3"))
}

func TestPrune(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	d, err := deduppg.New(ctx, db.Pool, deduppg.Config{Sync: "s", Target: "b"})
	require.NoError(t, err)
	keep, err := deduppg.New(ctx, db.Pool, deduppg.Config{Sync: "s", Target: "a"})
	require.NoError(t, err)

	old := ids("old", 25_000) // more than one prune batch
	require.NoError(t, d.Mark(ctx, old))
	require.NoError(t, keep.Mark(ctx, old[:10]))
	_, err = db.Pool.Exec(ctx, `UPDATE duplex.applied SET applied_at = now() - interval '2 hours'`)
	require.NoError(t, err)
	require.NoError(t, d.Mark(ctx, []string{"new"}))

	n, err := d.Prune(ctx, time.Hour)
	require.NoError(t, err)
	require.EqualValues(t, len(old), n)
	require.Equal(t, []bool{false, false, true}, seen(t, d, old[0], old[len(old)-1], "new"))
	require.Equal(t, []bool{true}, seen(t, keep, old[0]), "another target's rows were pruned")

	n, err = d.Prune(ctx, time.Hour)
	require.NoError(t, err)
	require.Zero(t, n)

	_, err = d.Prune(ctx, -time.Second)
	require.True(t, duplex.IsPermanent(err))
}

// TestOutage: while the server is unreachable (a proxy in front of it is
// stopped), Seen and Mark fail quickly with errors the Pipeline treats as an
// outage, and nothing panics; once it is back they work again.
func TestOutage(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	px := startProxy(t, "127.0.0.1:5432")
	cfg, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = "127.0.0.1", px.port
	cfg.ConnConfig.ConnectTimeout = time.Second
	cfg.ConnConfig.Fallbacks = nil
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	d, err := deduppg.New(t.Context(), pool, deduppg.Config{Sync: "s", Target: "b"})
	require.NoError(t, err)
	require.NoError(t, d.Mark(t.Context(), []string{"before"}))

	px.stop(t) // kills the pool's open connections too
	for range 3 {
		start := time.Now()
		got, err := d.Seen(t.Context(), []string{"before", "x"})
		require.Nil(t, got)
		require.True(t, duplex.IsUnavailable(err), "Seen: %v", err)
		require.ErrorContains(t, err, "deduppg: seen")
		err = d.Mark(t.Context(), []string{"during"})
		require.True(t, duplex.IsUnavailable(err), "Mark: %v", err)
		require.Less(t, time.Since(start), 3*time.Second)
	}
	_, err = deduppg.New(t.Context(), pool, deduppg.Config{Sync: "s", Target: "b"})
	require.True(t, duplex.IsUnavailable(err), "New: %v", err)

	px.start(t)
	require.Equal(t, []bool{true, false}, seen(t, d, "before", "during"), "the failed Mark must not have marked")
	require.NoError(t, d.Mark(t.Context(), []string{"after"}))
	require.Equal(t, []bool{true}, seen(t, d, "after"))
}

func seen(t *testing.T, d duplex.Deduper, ids ...string) []bool {
	t.Helper()
	got, err := d.Seen(t.Context(), ids)
	require.NoError(t, err)
	require.Len(t, got, len(ids))
	return got
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + "/slot/0/16B3748#" + strconv.Itoa(i)
	}
	return out
}

// BenchmarkSeenMark measures one Seen and one Mark of a batch of 512 ids,
// half of them marked before (every other batch repeats the previous one),
// against the local PostgreSQL server.
func BenchmarkSeenMark(b *testing.B) {
	const batch = 512
	db := testenv.Postgres(b)
	ctx := context.Background()
	d, err := deduppg.New(ctx, db.Pool, deduppg.Config{Sync: "bench", Target: "b"})
	if err != nil {
		b.Fatal(err)
	}
	var i, n int
	for b.Loop() {
		start := i / 2 * batch
		id := make([]string, batch)
		for j := range id {
			id[j] = "slot/0/16B3748#" + strconv.Itoa(start+j)
		}
		if _, err := d.Seen(ctx, id); err != nil {
			b.Fatal(err)
		}
		if err := d.Mark(ctx, id); err != nil {
			b.Fatal(err)
		}
		i++
		n += batch
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/id")
}
