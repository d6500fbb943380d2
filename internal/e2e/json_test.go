package e2e

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/resolve"
)

var docs = duplex.Table{Schema: "public", Name: "docs"}

// docsOf returns every row of docs as "id|json text|jsonb text".
func docsOf(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT id || '|' || j::text || '|' || jb::text FROM docs ORDER BY id`)
	require.NoError(t, err)
	out := []string{}
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// TestJSONEditsPastFloat64PrecisionSync edits json and jsonb columns in
// ways a comparison through float64 (or by JSON meaning, for json) cannot
// see: a number changed past float64's precision, from either side, and a
// json text changed in its whitespace only. Every edit reaches the other
// side; nothing conflicts.
func TestJSONEditsPastFloat64PrecisionSync(t *testing.T) {
	t.Parallel()
	const big = `{"n": 12345678901234567890}`
	p := startPairOf(t, []duplex.Table{docs}, duplex.Chain(resolve.DeadLetterAll()), nil, 0, func(pool *pgxpool.Pool) {
		exec(t, pool, `CREATE TABLE docs (id bigint PRIMARY KEY, j json NOT NULL, jb jsonb NOT NULL)`)
		exec(t, pool, `INSERT INTO docs SELECT i, $1::text::json, $1::text::jsonb FROM generate_series(1, 5) i`, big)
	})
	const bigger = `{"n": 12345678901234567891}`
	exec(t, p.a.Pool, `UPDATE docs SET j = $1 WHERE id = 1`, bigger)
	exec(t, p.a.Pool, `UPDATE docs SET jb = $1 WHERE id = 2`, bigger)
	exec(t, p.b.Pool, `UPDATE docs SET j = $1 WHERE id = 3`, bigger)
	exec(t, p.b.Pool, `UPDATE docs SET jb = $1 WHERE id = 4`, bigger)
	exec(t, p.a.Pool, `UPDATE docs SET j = '{"n":12345678901234567890}' WHERE id = 5`)
	p.waitQuiet(t, 5)

	want := []string{
		"1|" + bigger + "|" + big,
		"2|" + big + "|" + bigger,
		"3|" + bigger + "|" + big,
		"4|" + big + "|" + bigger,
		`5|{"n":12345678901234567890}|` + big,
	}
	require.Equal(t, map[string][]string{"a": want, "b": want},
		map[string][]string{"a": docsOf(t, p.a.Pool), "b": docsOf(t, p.b.Pool)})
	_, conflicts := p.events.total()
	require.Zero(t, conflicts)
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Empty(t, entries)
}
