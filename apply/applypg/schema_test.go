package applypg_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/internal/testenv"
)

// recorder is a slog.Handler keeping the warnings.
type recorder struct {
	mu    sync.Mutex
	warns []string
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	s := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "table" || a.Key == "field" {
			s += " " + a.Key + "=" + a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.warns = append(r.warns, s)
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.warns
	r.warns = nil
	return w
}

// TestSchemaChanges: fields the target lacks are dropped with one warning
// per table and field; columns added or dropped on the target after the
// Applier read the table are picked up.
func TestSchemaChanges(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	exec(t, db, itemsDDL)
	rec := &recorder{}
	a := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Logger = slog.New(rec) })
	key := func(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }
	apply := func(ws ...duplex.Write) {
		t.Helper()
		require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: ws}))
	}

	// Drift: the source has a column "extra" the target lacks.
	w := ins(1, "x", 1)
	w.Set["extra"] = "dropped"
	apply(w)
	w2 := ins(2, "y", 2)
	w2.Set["extra"] = "dropped too"
	apply(w2, upd(1, duplex.Values{"extra": "z", "n": int64(4)}, duplex.Values{"extra": "old"}))
	require.Equal(t, []string{"schema drift: field missing on the target table; ignored table=public.items field=extra"}, rec.take(),
		"one warning per table and field")
	require.Equal(t, duplex.Values{"id": int64(1), "name": "x", "n": int64(4), "note": nil}, itemsRow(t, db, 1))

	// The column appears on the target: written once the Applier looks
	// again.
	exec(t, db, "ALTER TABLE items ADD COLUMN extra text")
	a.SetDriftRefresh(0)
	w3 := ins(3, "z", 3)
	w3.Set["extra"] = "kept"
	apply(w3)
	require.Equal(t, 1, count(t, db, "SELECT count(*) FROM items WHERE id = 3 AND extra = 'kept'"))
	rows, err := a.Lookup(ctx, items, []duplex.Key{key(3)})
	require.NoError(t, err)
	require.Equal(t, "kept", rows[0]["extra"])

	// A column disappears: Lookup and Apply read the table again.
	exec(t, db, "ALTER TABLE items DROP COLUMN note")
	rows, err = a.Lookup(ctx, items, []duplex.Key{key(1), key(3)})
	require.NoError(t, err)
	require.Equal(t, duplex.Values{"id": int64(1), "name": "x", "n": int64(4), "extra": nil}, rows[0])
	w4 := ins(4, "w", 4) // carries note: nil
	apply(w4, upd(3, duplex.Values{"note": "gone", "n": int64(30)}, nil), upd(1, duplex.Values{"note": "gone"}, nil))
	require.Equal(t, 1, count(t, db, "SELECT count(*) FROM items WHERE id = 4"))
	require.Equal(t, 1, count(t, db, "SELECT count(*) FROM items WHERE id = 3 AND n = 30"))
	require.Equal(t, []string{"schema drift: field missing on the target table; ignored table=public.items field=note"}, rec.take())

	// A column changes type: Lookup decodes the new type.
	exec(t, db, "ALTER TABLE items ALTER COLUMN n TYPE numeric USING n + 0.5")
	rows, err = a.Lookup(ctx, items, []duplex.Key{key(3)})
	require.NoError(t, err)
	require.Equal(t, "30.5", rows[0]["n"])
	apply(upd(3, duplex.Values{"n": "31.25"}, duplex.Values{"n": "30.5"}))
	require.Equal(t, 1, count(t, db, "SELECT count(*) FROM items WHERE id = 3 AND n = 31.25"))

	// A table without a primary key is a permanent error naming the write.
	exec(t, db, "CREATE TABLE nokey (id int)")
	err = a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{ins(5, "v", 5),
		{Op: duplex.OpInsert, Table: duplex.Table{Schema: "public", Name: "nokey"}, Key: key(1), Set: duplex.Values{"id": int64(1)}}}})
	require.True(t, duplex.IsPermanent(err), "%v", err)
	var be *duplex.BatchError
	require.ErrorAs(t, err, &be)
	require.Equal(t, 1, be.Index)
	_, err = a.Lookup(ctx, duplex.Table{Schema: "public", Name: "missing"}, []duplex.Key{key(1)})
	require.True(t, duplex.IsPermanent(err), "%v", err)

	// An update of fields the table lacks only is skipped; the indices of
	// the other writes stay right.
	for _, m := range methods {
		b := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Method = m; c.Logger = logger(t) })
		err = b.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{
			upd(1, duplex.Values{"ghost": int64(1)}, nil), upd(3, duplex.Values{"name": "q"}, nil),
			upd(1, duplex.Values{"ghost": int64(2)}, nil), upd(1, duplex.Values{"n": "9"}, duplex.Values{"n": "12345"}),
		}})
		require.ErrorIs(t, err, duplex.ErrStale, m.String())
		require.ErrorAs(t, err, &be)
		require.Equal(t, 3, be.Index, m.String())
	}
}

// TestPrune deletes old ledger entries only.
func TestPrune(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	exec(t, db, itemsDDL)
	a := newApplier(t, db, testenv.UniqueName(t, "s"))
	other := newApplier(t, db, testenv.UniqueName(t, "s"))
	w := ins(1, "x", 1)
	require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{w}}))
	w2 := ins(2, "y", 1)
	require.NoError(t, other.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{w2}}))

	n, err := a.Prune(ctx, time.Hour)
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = a.Prune(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	applied, err := a.Applied(ctx, []string{w.Change.ID})
	require.NoError(t, err)
	require.Equal(t, []bool{false}, applied)
	applied, err = other.Applied(ctx, []string{w2.Change.ID})
	require.NoError(t, err)
	require.Equal(t, []bool{true}, applied, "another sync's ledger is kept")
}

// TestLedgerIndexUpgrade: New replaces the B-tree index on applied_at of
// earlier versions by the BRIN index, keeping the ledger.
func TestLedgerIndexUpgrade(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	exec(t, db, itemsDDL)
	exec(t, db, `CREATE SCHEMA old`)
	exec(t, db, `CREATE TABLE old.applied (sync text NOT NULL, target text NOT NULL, change_id text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (sync, target, change_id))`)
	exec(t, db, `CREATE INDEX IF NOT EXISTS applied_at_idx ON old.applied (applied_at)`)
	sync := testenv.UniqueName(t, "s")
	exec(t, db, `INSERT INTO old.applied (sync, target, change_id) VALUES ($1, 'b', 'c1')`, sync)
	a := newApplier(t, db, sync, func(c *applypg.Config) { c.Schema = "old" })
	rows, err := db.Pool.Query(ctx, `SELECT indexname FROM pg_indexes WHERE schemaname = 'old' AND tablename = 'applied' ORDER BY 1`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"applied_at_brin", "applied_pkey"}, names)
	applied, err := a.Applied(ctx, []string{"c1", "c2"})
	require.NoError(t, err)
	require.Equal(t, []bool{true, false}, applied)
	n, err := a.Prune(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

// TestNewChecksConfig names every problem.
func TestNewChecksConfig(t *testing.T) {
	t.Parallel()
	_, err := applypg.New(t.Context(), nil, applypg.Config{Sync: "!!", Method: 9})
	require.Error(t, err)
	for _, field := range []string{"pool", "Sync", "Target", "Method"} {
		require.ErrorContains(t, err, "duplex: "+field+":")
	}
	require.True(t, duplex.IsPermanent(err))
	require.Equal(t, "duplex:my_sync:b", applypg.DefaultOrigin("My Sync", "b"))
}
