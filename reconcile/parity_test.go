package reconcile_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
	"github.com/duplexsync/duplex/reconcile"
)

var items = duplex.Table{Schema: "public", Name: "items"}

const itemsDDL = `CREATE TABLE items (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	price numeric(12,2),
	ratio float8,
	span interval,
	at timestamptz,
	data bytea)`

const seedItems = `INSERT INTO items
	SELECT i, 'item ' || i, i * 1.25, i / 3.0, make_interval(hours => i), '2026-01-01 00:00:00+00'::timestamptz + make_interval(mins => i), int8send(i)
	FROM generate_series(1, $1) i`

func logger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	_, err := pool.Exec(t.Context(), sql, args...)
	require.NoError(t, err)
}

// twoDBs returns two fresh databases, each with ddl run.
func twoDBs(t *testing.T, ddl string) (a, b *testenv.DB) {
	t.Helper()
	a, b = testenv.Postgres(t), testenv.Postgres(t)
	exec(t, a.Pool, ddl)
	exec(t, b.Pool, ddl)
	return a, b
}

func newChecker(t *testing.T, a, b *pgxpool.Pool, chunk int, tables ...duplex.Table) *reconcile.Checker {
	t.Helper()
	cfg := reconcile.Config{ChunkSize: chunk, RecheckDelay: 10 * time.Millisecond, Logger: logger(t)}
	for _, tb := range tables {
		cfg.Tables = append(cfg.Tables, reconcile.TableConfig{Table: tb})
	}
	c, err := reconcile.NewChecker(a, b, cfg)
	require.NoError(t, err)
	return c
}

func idKey(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }

// TestCheckerReportsExactlyTheRangesThatDiffer: identical tables are clean;
// then an update, a delete, a changed timestamp and a row beyond A's last
// key on B make exactly their ranges differ, with the counts of each side.
func TestCheckerReportsExactlyTheRangesThatDiffer(t *testing.T) {
	t.Parallel()
	a, b := twoDBs(t, itemsDDL)
	exec(t, a.Pool, seedItems, 2500)
	exec(t, b.Pool, seedItems, 2500)
	c := newChecker(t, a.Pool, b.Pool, 500, items)

	r, err := c.CheckTable(t.Context(), items)
	require.NoError(t, err)
	require.True(t, r.Clean(), "identical tables: %+v", r.Mismatched)
	require.Equal(t, int64(2500), r.RowsA)
	require.Equal(t, int64(2500), r.RowsB)
	require.Equal(t, 5, r.Ranges)
	require.Equal(t, items, r.Table)

	exec(t, b.Pool, `UPDATE items SET at = at + interval '1 microsecond' WHERE id = 10`)
	exec(t, b.Pool, `UPDATE items SET name = 'changed' WHERE id = 742`)
	exec(t, b.Pool, `DELETE FROM items WHERE id = 1800`)
	exec(t, b.Pool, `INSERT INTO items (id, name) VALUES (3000, 'only on b')`)
	r, err = c.CheckTable(t.Context(), items)
	require.NoError(t, err)
	require.False(t, r.Clean())
	require.Equal(t, int64(2500), r.RowsA)
	require.Equal(t, int64(2500), r.RowsB) // one deleted, one inserted
	require.Equal(t, 6, r.Ranges, "five ranges of A, one of B after A's last key")
	require.Equal(t, []reconcile.Range{
		{Lo: nil, Hi: idKey(500), CountA: 500, CountB: 500},
		{Lo: idKey(500), Hi: idKey(1000), CountA: 500, CountB: 500},
		{Lo: idKey(1500), Hi: idKey(2000), CountA: 500, CountB: 499},
		{Lo: idKey(2500), Hi: nil, CountA: 0, CountB: 1},
	}, exported(r.Mismatched))
	require.Equal(t, "(id=1500, id=2000]", r.Mismatched[2].String())
	require.Equal(t, "(-inf, id=500]", r.Mismatched[0].String())
	require.Zero(t, r.FalseAlarms)
}

// exported drops the unexported fields of ranges, for comparisons.
func exported(rs []reconcile.Range) []reconcile.Range {
	out := make([]reconcile.Range, len(rs))
	for i, r := range rs {
		out[i] = reconcile.Range{Lo: r.Lo, Hi: r.Hi, CountA: r.CountA, CountB: r.CountB}
	}
	return out
}

// TestCheckerIgnoresEachDatabasesOutputDefaults: B's database renders
// dates, times, intervals, floats and bytea differently by default; the
// pinned settings make the same values hash the same.
func TestCheckerIgnoresEachDatabasesOutputDefaults(t *testing.T) {
	t.Parallel()
	a, b := twoDBs(t, itemsDDL)
	exec(t, a.Pool, seedItems, 300)
	exec(t, b.Pool, seedItems, 300)
	exec(t, b.Pool, fmt.Sprintf(`ALTER DATABASE %s SET DateStyle = 'SQL, DMY'; ALTER DATABASE %[1]s SET TimeZone = 'America/New_York';
		ALTER DATABASE %[1]s SET IntervalStyle = 'sql_standard'; ALTER DATABASE %[1]s SET extra_float_digits = 0;
		ALTER DATABASE %[1]s SET bytea_output = 'escape'`, b.Name))
	cfg, err := pgxpool.ParseConfig(b.URL)
	require.NoError(t, err)
	odd, err := pgxpool.NewWithConfig(t.Context(), cfg) // new sessions pick up the database's settings
	require.NoError(t, err)
	t.Cleanup(odd.Close)
	var style string
	require.NoError(t, odd.QueryRow(t.Context(), "SHOW DateStyle").Scan(&style))
	require.Equal(t, "SQL, DMY", style)

	c := newChecker(t, a.Pool, odd, 100, items)
	r, err := c.CheckTable(t.Context(), items)
	require.NoError(t, err)
	require.True(t, r.Clean(), "%+v", r.Mismatched)
	require.Equal(t, int64(300), r.RowsB)

	// And a real difference is still seen.
	exec(t, b.Pool, `UPDATE items SET ratio = ratio + 1e-12 WHERE id = 150`)
	r, err = c.CheckTable(t.Context(), items)
	require.NoError(t, err)
	require.Len(t, r.Mismatched, 1)
	require.Equal(t, idKey(100), r.Mismatched[0].Lo)
}

const linesDDL = `CREATE SCHEMA "Sales Data";
	CREATE TABLE "Sales Data"."Order ""Lines""" (
		tenant text,
		id uuid,
		"Select" text,
		qty int,
		local_note text,
		PRIMARY KEY (tenant, id))`

var lines = duplex.Table{Schema: "Sales Data", Name: `Order "Lines"`}

const seedLines = `INSERT INTO "Sales Data"."Order ""Lines"""
	SELECT 't' || (i % 3), md5(i::text)::uuid, 'x' || i, i, 'note' FROM generate_series(1, $1) i`

// TestMultiColumnTextKeysAndQuotedNames: a composite key of text and uuid,
// names that need quoting, an excluded column; Diff names the one key that
// differs with its decoded values.
func TestMultiColumnTextKeysAndQuotedNames(t *testing.T) {
	t.Parallel()
	a, b := twoDBs(t, linesDDL)
	exec(t, a.Pool, seedLines, 200)
	exec(t, b.Pool, seedLines, 200)
	exec(t, b.Pool, `UPDATE "Sales Data"."Order ""Lines""" SET local_note = 'b has its own'`)
	c, err := reconcile.NewChecker(a.Pool, b.Pool, reconcile.Config{
		Tables:    []reconcile.TableConfig{{Table: lines, Exclude: []string{"local_note"}}},
		ChunkSize: 7, RecheckDelay: -1, Logger: logger(t),
	})
	require.NoError(t, err)
	r, err := c.CheckTable(t.Context(), lines)
	require.NoError(t, err)
	require.True(t, r.Clean(), "the excluded column is not compared: %+v", r.Mismatched)
	require.Equal(t, 29, r.Ranges) // ceil(200/7)

	var id string
	require.NoError(t, b.Pool.QueryRow(t.Context(), `UPDATE "Sales Data"."Order ""Lines""" SET "Select" = 'changed'
		WHERE id = md5('77')::uuid RETURNING id::text`).Scan(&id))
	r, err = c.CheckTable(t.Context(), lines)
	require.NoError(t, err)
	require.Len(t, r.Mismatched, 1)
	require.Equal(t, int64(7), r.Mismatched[0].CountA)
	require.Len(t, r.Mismatched[0].Hi, 2)
	require.Equal(t, "tenant", r.Mismatched[0].Hi[0].Name)

	rec, err := reconcile.NewReconciler(c, reconcile.ReconcilerConfig{Repair: nopRepair})
	require.NoError(t, err)
	var diffs []reconcile.Difference
	require.NoError(t, rec.Diff(t.Context(), r, func(_ context.Context, d reconcile.Difference) error {
		diffs = append(diffs, d)
		return nil
	}))
	require.Equal(t, []reconcile.Difference{{Table: lines, Kind: reconcile.DiffValues,
		Key: duplex.Key{{Name: "tenant", Value: "t2"}, {Name: "id", Value: id}}}}, diffs)
}

func nopRepair(context.Context, duplex.Table, duplex.Key) (duplex.ActionResult, error) {
	return duplex.ActionResult{Outcome: duplex.OutcomeUnchanged}, nil
}

// TestEmptySides: both empty is one clean range; A empty and B full is
// walked on B's keys, chunk by chunk.
func TestEmptySides(t *testing.T) {
	t.Parallel()
	a, b := twoDBs(t, itemsDDL)
	c := newChecker(t, a.Pool, b.Pool, 40, items)
	r, err := c.CheckTable(t.Context(), items)
	require.NoError(t, err)
	require.True(t, r.Clean())
	require.Equal(t, 1, r.Ranges)

	exec(t, b.Pool, seedItems, 100)
	r, err = c.CheckTable(t.Context(), items)
	require.NoError(t, err)
	require.Equal(t, []reconcile.Range{
		{Lo: nil, Hi: idKey(40), CountA: 0, CountB: 40},
		{Lo: idKey(40), Hi: idKey(80), CountA: 0, CountB: 40},
		{Lo: idKey(80), Hi: nil, CountA: 0, CountB: 20},
	}, exported(r.Mismatched))
	require.Equal(t, int64(100), r.RowsB)
}

// TestRecheckDropsFalseAlarms: a range that differs on the first pass but
// agrees when checked again (the change arrived meanwhile) is not reported.
func TestRecheckDropsFalseAlarms(t *testing.T) {
	t.Parallel()
	a, b := twoDBs(t, itemsDDL)
	exec(t, a.Pool, seedItems, 100)
	exec(t, b.Pool, seedItems, 100)
	exec(t, b.Pool, `UPDATE items SET name = 'in flight' WHERE id IN (5, 95)`)
	c := newChecker(t, a.Pool, b.Pool, 50, items)
	reconcile.SetBeforeRecheck(c, func() {
		exec(t, a.Pool, `UPDATE items SET name = 'in flight' WHERE id = 5`) // arrives on A
	})
	r, err := c.CheckTable(t.Context(), items)
	require.NoError(t, err)
	require.Equal(t, 1, r.FalseAlarms)
	require.Equal(t, []reconcile.Range{{Lo: idKey(50), Hi: idKey(100), CountA: 50, CountB: 50}}, exported(r.Mismatched))
}

// TestRunChecksPeriodically: Run reports every table each round until ctx
// ends, and a table that cannot be checked is reported with its error.
func TestRunChecksPeriodically(t *testing.T) {
	t.Parallel()
	a, b := twoDBs(t, itemsDDL)
	exec(t, a.Pool, seedItems, 10)
	exec(t, b.Pool, seedItems, 10)
	missing := duplex.Table{Schema: "public", Name: "missing"}
	c := newChecker(t, a.Pool, b.Pool, 0, items, missing)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var got []*reconcile.Report
	err := c.Run(ctx, 5*time.Millisecond, func(_ context.Context, r *reconcile.Report) {
		got = append(got, r)
		if len(got) == 6 {
			cancel()
		}
	})
	require.NoError(t, err)
	require.Len(t, got, 6)
	for i, r := range got {
		if i%2 == 0 {
			require.Equal(t, items, r.Table)
			require.True(t, r.Clean())
			require.Equal(t, int64(10), r.RowsA)
		} else {
			require.Equal(t, missing, r.Table)
			require.ErrorContains(t, r.Err, "public.missing does not exist on side a")
			require.True(t, duplex.IsPermanent(r.Err))
		}
	}
}

// TestConfigErrors: what NewChecker and NewReconciler refuse.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	_, err := reconcile.NewChecker(nil, nil, reconcile.Config{Tables: []reconcile.TableConfig{{Table: duplex.Table{Name: "x"}}}, ChunkSize: -1})
	require.ErrorContains(t, err, "both pools are required")
	require.ErrorContains(t, err, `table "x" is not schema-qualified`)
	require.ErrorContains(t, err, "ChunkSize")
	_, err = reconcile.NewReconciler(nil, reconcile.ReconcilerConfig{})
	require.ErrorContains(t, err, "Repair")

	a, b := twoDBs(t, `CREATE TABLE nokey (v int); CREATE TABLE k (id int PRIMARY KEY, v int)`)
	exec(t, b.Pool, `ALTER TABLE k DROP COLUMN v`)
	c, err := reconcile.NewChecker(a.Pool, b.Pool, reconcile.Config{Tables: []reconcile.TableConfig{
		{Table: duplex.Table{Schema: "public", Name: "nokey"}},
		{Table: duplex.Table{Schema: "public", Name: "k"}, Columns: []string{"v"}},
	}})
	require.NoError(t, err)
	_, err = c.CheckTable(t.Context(), duplex.Table{Schema: "public", Name: "nokey"})
	require.ErrorContains(t, err, "table public.nokey has no primary key")
	_, err = c.CheckTable(t.Context(), duplex.Table{Schema: "public", Name: "k"})
	require.ErrorContains(t, err, "table public.k: column v is missing on side b")
	_, err = c.CheckTable(t.Context(), duplex.Table{Schema: "public", Name: "other"})
	require.ErrorContains(t, err, "public.other is not configured")
}

// TestStatementTimeout: each statement runs under Config.StatementTimeout;
// a check that exceeds it fails naming the table and side.
func TestStatementTimeout(t *testing.T) {
	t.Parallel()
	a, b := twoDBs(t, itemsDDL)
	exec(t, a.Pool, seedItems, 50_000)
	c, err := reconcile.NewChecker(a.Pool, b.Pool, reconcile.Config{
		Tables: []reconcile.TableConfig{{Table: items}}, ChunkSize: 50_000, StatementTimeout: time.Microsecond, Logger: logger(t),
	})
	require.NoError(t, err)
	_, err = c.CheckTable(t.Context(), items)
	require.ErrorContains(t, err, "reconcile: table public.items: side a: ")
	require.ErrorContains(t, err, "statement timeout")
}
