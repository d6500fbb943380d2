package main_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/internal/testenv"
)

// notesDDL is a table without updated_at, seeded alike on both sides.
const notesDDL = `
CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL, tag text);
INSERT INTO notes (id, body) SELECT i, 'note ' || i FROM generate_series(1, 6) i;
`

const notesQ = `SELECT row(id, body, tag)::text FROM notes ORDER BY id`

// TestDefaultLWWWithoutUpdatedAt runs pgbisync with the default conflict
// policy (-conflict lww -lww-column updated_at) on a table that has no
// updated_at column: it starts, says that the table's conflicts are
// decided on commit timestamps, and syncs edits both ways. Conflicting
// edits of one field, made while it is down, are decided by commit time
// when the server records commit timestamps (the later commit wins, a tie
// within -skew goes to the DLQ); when it does not, pgbisync warns at
// start-up, naming the tables and the fix, and both conflicts go to the
// DLQ with that reason instead of being guessed.
func TestDefaultLWWWithoutUpdatedAt(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	ctx := t.Context()
	for _, db := range []*testenv.DB{p.a, p.b} {
		_, err := db.Pool.Exec(ctx, notesDDL)
		require.NoError(t, err)
	}
	var track string
	require.NoError(t, p.a.Pool.QueryRow(ctx, "SHOW track_commit_timestamp").Scan(&track))
	commitTimes := track == "on" // both databases are on one server
	t.Logf("track_commit_timestamp = %s", track)

	admin := freeAddr(t)
	// -conflict and -lww-column keep their defaults. -skew is wider than
	// its default so that two edits committed back to back are a tie even
	// on a loaded machine.
	args := []string{"-a", p.a.URL, "-b", p.b.URL, "-tables", "customers,notes", "-skew", "2s", "-admin", admin, "-name", p.name}
	first := start(t, args...)
	first.waitReady(t)
	require.Contains(t, first.stdout.String(), "conflict=lww(updated_at, skew 2s, commit timestamps on public.notes)")
	const warning = `level=WARN msg="track_commit_timestamp is off: conflicts on tables without the lww column cannot be ordered and go to the dead-letter queue"`
	policies := []string{
		`msg="conflict policy" table=public.customers policy="lww on column updated_at"`,
		`msg="conflict policy" table=public.notes policy="lww on commit timestamps (no updated_at column)"`,
	}
	if !commitTimes {
		for _, s := range []string{"a", "b"} {
			policies = append(policies, warning+" side="+s+" tables=public.notes lww_column=updated_at "+
				`fix="ALTER SYSTEM SET track_commit_timestamp = on, then restart PostgreSQL"`)
		}
	}
	// stderr is copied apart from stdout: what was logged before "ready"
	// may show a moment later.
	for _, want := range policies {
		waitFor(t, "the start-up log line "+want, func() bool { return strings.Contains(first.stderr.String(), want) })
	}
	if commitTimes {
		require.NotContains(t, first.stderr.String(), "track_commit_timestamp is off")
	}

	// Edits both ways, no conflict: different rows, different fields of one
	// row, inserts and a delete.
	for _, e := range []struct {
		db  *testenv.DB
		sql string
	}{
		{p.a, `UPDATE notes SET body = 'edited on a' WHERE id = 1`},
		{p.b, `UPDATE notes SET tag = 'tagged on b' WHERE id = 2`},
		{p.a, `UPDATE notes SET body = 'body from a' WHERE id = 3`},
		{p.b, `UPDATE notes SET tag = 'tag from b' WHERE id = 3`},
		{p.a, `INSERT INTO notes (id, body) VALUES (10, 'new on a')`},
		{p.b, `INSERT INTO notes (id, body, tag) VALUES (20, 'new on b', 'b')`},
		{p.b, `DELETE FROM notes WHERE id = 5`},
	} {
		_, err := e.db.Pool.Exec(ctx, e.sql)
		require.NoError(t, err, e.sql)
	}
	rows := waitEqual(t, p, notesQ, first)
	require.Equal(t, strings.Join([]string{
		`(1,"edited on a",)`, `(2,"note 2","tagged on b")`, `(3,"body from a","tag from b")`,
		`(4,"note 4",)`, `(6,"note 6",)`, `(10,"new on a",)`, `(20,"new on b",b)`,
	}, "\n"), rows)
	require.Empty(t, dlqList(t, admin, "sync="+p.name+"&status=pending"))
	first.stop(t)

	// While it is down, both sides edit the body of rows 4 and 6. Row 6:
	// back to back (a tie). Row 4: b commits more than -skew after a.
	for _, e := range []struct {
		db   *testenv.DB
		body string
		id   int
	}{{p.a, "tie from a", 6}, {p.b, "tie from b", 6}, {p.a, "older from a", 4}} {
		_, err := e.db.Pool.Exec(ctx, `UPDATE notes SET body = $1 WHERE id = $2`, e.body, e.id)
		require.NoError(t, err)
	}
	var olderAt time.Time
	require.NoError(t, p.a.Pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&olderAt))
	waitFor(t, "the clock to pass a's edit by more than -skew", func() bool {
		var past bool
		require.NoError(t, p.b.Pool.QueryRow(ctx, `SELECT clock_timestamp() > $1::timestamptz + interval '3 seconds'`, olderAt).Scan(&past))
		return past
	})
	_, err := p.b.Pool.Exec(ctx, `UPDATE notes SET body = 'newer from b' WHERE id = 4`)
	require.NoError(t, err)

	restarted := start(t, args...)
	restarted.waitReady(t)
	pending := func() []dlqEntry { return dlqList(t, admin, "sync="+p.name+"&status=pending") }
	// bodies returns the source's body of each pending entry.
	bodies := func(entries []dlqEntry) map[string]string {
		out := map[string]string{}
		for _, e := range entries {
			require.Equal(t, "public.notes", e.Change.Table.Schema+"."+e.Change.Table.Name)
			require.NotNil(t, e.Conflict)
			out[fmt.Sprint(e.Conflict.Source["body"])] = e.Error
		}
		return out
	}
	if commitTimes {
		waitFor(t, "row 4 to converge on b's later edit", func() bool {
			return strings.Contains(dump(t, p.a.Pool, notesQ), `(4,"newer from b",)`) && strings.Contains(dump(t, p.b.Pool, notesQ), `(4,"newer from b",)`)
		})
		waitFor(t, "row 6's tie in the DLQ", func() bool { return len(pending()) > 0 })
		for body, why := range bodies(pending()) {
			require.Contains(t, []string{"tie from a", "tie from b"}, body, "only the tie is dead-lettered")
			require.Contains(t, why, "too close to call")
		}
	} else {
		waitFor(t, "rows 4 and 6 in the DLQ", func() bool {
			b := bodies(pending())
			return (b["tie from a"] != "" || b["tie from b"] != "") && (b["older from a"] != "" || b["newer from b"] != "")
		})
		for _, why := range bodies(pending()) {
			require.Contains(t, why, "track_commit_timestamp is off on -a and -b")
			require.Contains(t, why, "ALTER SYSTEM SET track_commit_timestamp = on")
		}
		require.Contains(t, dump(t, p.a.Pool, notesQ), `(4,"older from a",)`, "nothing guessed: each side keeps its row")
		require.Contains(t, dump(t, p.b.Pool, notesQ), `(4,"newer from b",)`)
	}
	// The tie is held as each side had it, for a person.
	require.Contains(t, dump(t, p.a.Pool, notesQ), `(6,"tie from a",)`)
	require.Contains(t, dump(t, p.b.Pool, notesQ), `(6,"tie from b",)`)

	// The rows nobody contested still sync both ways.
	_, err = p.b.Pool.Exec(ctx, `UPDATE notes SET tag = 'after the restart' WHERE id = 1`)
	require.NoError(t, err)
	require.Contains(t, waitEqual(t, p, `SELECT row(id, body, tag)::text FROM notes WHERE id NOT IN (4, 6) ORDER BY id`, restarted),
		`(1,"edited on a","after the restart")`)
	restarted.stop(t)
}
