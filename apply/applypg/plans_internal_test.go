package applypg

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
)

// TestLedgerQueryProbesTheIndexPerID checks the plan of the ledger question
// on a large ledger that was never analyzed: it must look each ID up in the
// primary key, not scan the sync's rows and filter them.
func TestLedgerQueryProbesTheIndexPerID(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), `CREATE TABLE ledger (sync text NOT NULL, target text NOT NULL, change_id text NOT NULL,
		PRIMARY KEY (sync, target, change_id));
		INSERT INTO ledger SELECT 's', 'b', 'id' || i FROM generate_series(1, 50000) i`)
	require.NoError(t, err)
	rows, err := db.Pool.Query(t.Context(), "EXPLAIN "+ledgerSQL("ledger"), "s", "b", []string{"id1", "id2", "nope"})
	require.NoError(t, err)
	var plan []string
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan = append(plan, line)
	}
	require.NoError(t, rows.Err())
	text := strings.Join(plan, "\n")
	require.Contains(t, text, "change_id = i.id", "an index condition on the id:\n%s", text)
	require.NotContains(t, text, "ANY", text)

	got, err := db.Pool.Query(t.Context(), ledgerSQL("ledger"), "s", "b", []string{"id1", "nope", "id50000"})
	require.NoError(t, err)
	var found []string
	for got.Next() {
		var id string
		require.NoError(t, got.Scan(&id))
		found = append(found, id)
	}
	require.NoError(t, got.Err())
	require.ElementsMatch(t, []string{"id1", "id50000"}, found)
}

// TestLookupProbesTheIndexPerKey checks the plan Lookup gets while the
// table is still empty, as a sync started on a new table caches it (a
// generic plan, reused as the table grows): one index probe per key, never
// a hash join over a scan of the table.
func TestLookupProbesTheIndexPerKey(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), `CREATE TABLE items (a int, b text, v text, PRIMARY KEY (a, b))`)
	require.NoError(t, err)
	app, err := New(t.Context(), db.Pool, Config{Sync: testenv.UniqueName(t, "plans"), Target: "b"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = app.DropOrigins(context.Background()) })
	table := duplex.Table{Schema: "public", Name: "items"}
	key := func(a int, b string) duplex.Key {
		return duplex.Key{{Name: "a", Value: int64(a)}, {Name: "b", Value: b}}
	}
	m, err := app.meta(t.Context(), table)
	require.NoError(t, err)

	tx, err := db.Pool.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(t.Context()) }()
	_, err = tx.Exec(t.Context(), "SET LOCAL plan_cache_mode = force_generic_plan")
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), "PREPARE lookup AS "+m.lookupSQL)
	require.NoError(t, err)
	plan, err := tx.Query(t.Context(), "EXPLAIN EXECUTE lookup('{1,2}', '{x,x}')")
	require.NoError(t, err)
	var lines []string
	for plan.Next() {
		var line string
		require.NoError(t, plan.Scan(&line))
		lines = append(lines, line)
	}
	require.NoError(t, plan.Err())
	text := strings.Join(lines, "\n")
	require.Contains(t, text, "Index Scan", text)
	require.NotContains(t, text, "Seq Scan", text)
	require.NotContains(t, text, "Hash Join", text)
	require.NoError(t, tx.Rollback(t.Context()))

	_, err = db.Pool.Exec(t.Context(), `INSERT INTO items SELECT i, 'x', 'v' || i FROM generate_series(1, 1000) i`)
	require.NoError(t, err)
	rows, err := app.Lookup(t.Context(), table, []duplex.Key{key(7, "x"), key(7, "y"), key(1000, "x")})
	require.NoError(t, err)
	require.Equal(t, "v7", rows[0]["v"])
	require.Nil(t, rows[1])
	require.Equal(t, "v1000", rows[2]["v"])
}
