package e2e

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/check/checkpg"
	"github.com/duplexsync/duplex/dlq"
)

// tableText returns the rows of table in text form, ordered by its first
// column.
func tableText(t *testing.T, pool *pgxpool.Pool, table string) string {
	t.Helper()
	var s string
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '') FROM "+table+" x").Scan(&s))
	return s
}

func checker(p *pair, mod ...func(*checkpg.Config)) duplex.Preflight {
	cfg := checkpg.Config{Sync: p.syncName, A: checkpg.Side{Name: "a", Pool: p.a.Pool}, B: checkpg.Side{Name: "b", Pool: p.b.Pool},
		Tables: p.tables, ReplicaIdentity: "set", Logger: p.logger}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := checkpg.New(cfg)
	if err != nil {
		panic(err)
	}
	return c
}

// TestTouchTriggerDoesNotRewriteSyncedRows is the first trap: a
// "touch" trigger (updated_at := clock_timestamp()) on both sides. After 5
// inserts and an update on a, synced to b, every row is the same on both
// sides, updated_at included, and b's audit trigger logged nothing for the
// synced writes.
func TestTouchTriggerDoesNotRewriteSyncedRows(t *testing.T) {
	t.Parallel()
	schema := func(pool *pgxpool.Pool) {
		exec(t, pool, ddl+`;
			CREATE TABLE audit (id bigint);
			CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
			CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NULL; END $$;
			CREATE TRIGGER touch BEFORE INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION touch();
			CREATE TRIGGER audit AFTER INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION audit();`)
	}
	p := startPairOf(t, []duplex.Table{customers}, nil, nil, 0, schema)
	for i := 1; i <= 5; i++ {
		exec(t, p.a.Pool, `INSERT INTO customers (id, name, email, status) VALUES ($1, 'n', 'e', 'new')`, i)
	}
	exec(t, p.a.Pool, `UPDATE customers SET status = 'vip' WHERE id = 3`)
	waitFor(t, "b holds a's rows", p, func() bool {
		return tableText(t, p.a.Pool, "customers") == tableText(t, p.b.Pool, "customers")
	})
	require.Equal(t, 6, count(t, p.a.Pool, "SELECT count(*) FROM audit"), "a's own writes fire a's triggers")
	require.Zero(t, count(t, p.b.Pool, "SELECT count(*) FROM audit"), "synced writes do not fire b's triggers")
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), sql, args...).Scan(&n), sql)
	return n
}

// insertDuration is how long TestInterleavedSequencesUnderConcurrentInserts
// inserts on both sides: a few seconds in make test, the minute
// with DUPLEX_TRAPS_LONG=1.
func insertDuration() time.Duration {
	if os.Getenv("DUPLEX_TRAPS_LONG") != "" {
		return time.Minute
	}
	return 4 * time.Second
}

// TestInterleavedSequencesUnderConcurrentInserts: bigserial keys on both
// sides. The preflight refuses to start; with -sequences=interleave it
// arranges them at start, and both applications then insert concurrently
// (insertDuration) while the sync runs: no duplicate-key error on either
// side, nothing in the DLQ, and both sides end with every row.
func TestInterleavedSequencesUnderConcurrentInserts(t *testing.T) {
	t.Parallel()
	orders := duplex.Table{Schema: "public", Name: "orders"}
	schema := func(pool *pgxpool.Pool) {
		exec(t, pool, `CREATE TABLE orders (id bigserial PRIMARY KEY, side text NOT NULL, n int NOT NULL)`)
	}
	p := startPairOf(t, []duplex.Table{orders}, nil, nil, 0, schema, func(p *pair) {
		p.preflight = func(p *pair) duplex.Preflight {
			return checker(p, func(c *checkpg.Config) { c.Sequences = checkpg.SequencesInterleave })
		}
	})
	// The sync's preflight arranged the sequences at start.
	ab, ba := p.sync.Pipelines()
	for _, pl := range []*duplex.Pipeline{ab, ba} {
		select {
		case <-pl.Ready():
		case err := <-p.done:
			t.Fatalf("sync stopped: %v", err)
		}
	}
	require.Len(t, p.sync.Report().Done, 2, "both sequences altered: %v", p.sync.Report().Done)
	r, err := checker(p).Check(t.Context(), duplex.CheckParams{Fix: true})
	require.NoError(t, err)
	require.Zero(t, r.Count(duplex.Blocker), "arranged at start: %v", r.All())

	var wg sync.WaitGroup
	var inserted [2]int
	var errs [2]error
	stop := time.Now().Add(insertDuration())
	for i, pool := range []*pgxpool.Pool{p.a.Pool, p.b.Pool} {
		wg.Go(func() {
			for n := 0; time.Now().Before(stop); n++ {
				if _, err := pool.Exec(t.Context(), `INSERT INTO orders (side, n) VALUES ($1, $2)`, []string{"a", "b"}[i], n); err != nil {
					errs[i] = fmt.Errorf("insert %d on %s: %w", n, []string{"a", "b"}[i], err)
					return
				}
				inserted[i]++
			}
		})
	}
	wg.Wait()
	require.NoError(t, errs[0], "no duplicate key on a")
	require.NoError(t, errs[1], "no duplicate key on b")
	total := inserted[0] + inserted[1]
	waitFor(t, "both sides hold every row", p, func() bool {
		return count(t, p.a.Pool, "SELECT count(*) FROM orders") == total && count(t, p.b.Pool, "SELECT count(*) FROM orders") == total
	})
	require.Equal(t, tableText(t, p.a.Pool, "orders"), tableText(t, p.b.Pool, "orders"))
	require.Zero(t, count(t, p.a.Pool, "SELECT count(*) FROM orders WHERE (id % 2 = 1) <> (side = 'a')"), "a's keys odd, b's even")
	entries, n, err := p.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Zero(t, n, "nothing dead-lettered: %v", entries)
	t.Logf("%s of concurrent inserts: %d on a, %d on b, 0 duplicate keys, 0 dead letters", insertDuration(), inserted[0], inserted[1])
}

// TestForeignKeysParentChildAndCascade: a writes a parent and its children
// in one transaction; b deletes a parent whose children go by ON DELETE
// CASCADE. Both arrive on the other side, which ends with the same rows,
// and nothing is dead-lettered.
func TestForeignKeysParentChildAndCascade(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"replica", "origin"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			foreignKeys(t, mode == "origin")
		})
	}
}

// foreignKeys is TestForeignKeysParentChildAndCascade with the appliers in
// replica mode (foreign keys not checked on apply) or, with checked,
// applying with every trigger (foreign keys checked at once: the preflight
// finds the ON DELETE CASCADE constraints fine, and they are).
func foreignKeys(t *testing.T, checked bool) {
	parents, children := duplex.Table{Schema: "public", Name: "parents"}, duplex.Table{Schema: "public", Name: "children"}
	schema := func(pool *pgxpool.Pool) {
		exec(t, pool, `CREATE TABLE parents (id bigint PRIMARY KEY, name text NOT NULL);
			CREATE TABLE children (id bigint PRIMARY KEY, parent bigint NOT NULL REFERENCES parents ON DELETE CASCADE, name text NOT NULL);
			INSERT INTO parents VALUES (1, 'one'); INSERT INTO children VALUES (10, 1, 'ten'), (11, 1, 'eleven');`)
	}
	p := startPairOf(t, []duplex.Table{children, parents}, nil, nil, 0, schema, func(p *pair) {
		p.preflight = func(p *pair) duplex.Preflight {
			return checker(p, func(c *checkpg.Config) { c.Triggers.All = checked })
		}
		if checked {
			p.applyConfig = func(c *applypg.Config) { c.Triggers.All = true }
		}
	})
	if checked {
		r, err := checker(p, func(c *checkpg.Config) { c.Triggers.All = true }).Check(t.Context(), duplex.CheckParams{})
		require.NoError(t, err)
		var fks []string
		for _, f := range r.All() {
			if f.Check == "foreign_keys" {
				fks = append(fks, f.Severity.String()+": "+f.What)
			}
		}
		require.Equal(t, []string{"fine: children_parent_fkey on a references synced public.parents (ON DELETE CASCADE)",
			"fine: children_parent_fkey on b references synced public.parents (ON DELETE CASCADE)"}, fks)
	}
	tx, err := p.a.Pool.Begin(t.Context())
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), `INSERT INTO parents VALUES (2, 'two'); INSERT INTO children VALUES (20, 2, 'twenty'), (21, 2, 'twenty-one')`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(t.Context()))
	exec(t, p.b.Pool, `DELETE FROM parents WHERE id = 1`)
	want := func(pool *pgxpool.Pool) bool {
		return tableText(t, pool, "parents") == "(2,two)" && tableText(t, pool, "children") == "(20,2,twenty)\n(21,2,twenty-one)"
	}
	waitFor(t, "both sides hold parent 2 and its children, parent 1 and its children gone", p, func() bool {
		return want(p.a.Pool) && want(p.b.Pool)
	})
	entries, n, err := p.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Zero(t, n, "nothing dead-lettered: %v", entries)
}
