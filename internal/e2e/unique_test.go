package e2e

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
)

// uniqueEntry waits until the DLQ holds exactly one entry, a unique
// collision put count times (once per direction that refused its row),
// and returns it.
func uniqueEntry(t *testing.T, p *pair, count int) dlq.Entry {
	t.Helper()
	var es []dlq.Entry
	waitFor(t, fmt.Sprintf("one unique-collision entry put %d times", count), p, func() bool {
		es = allEntries(t, p)
		return len(es) == 1 && es[0].Count >= count
	})
	e := es[0]
	require.Equal(t, count, e.Count, "put once per refused row: %+v", e)
	require.Equal(t, dlq.StatusPending, e.Status)
	require.Equal(t, duplex.ReasonConflict, e.Reason)
	require.NotNil(t, e.Conflict)
	require.Equal(t, duplex.UniqueCollision, e.Conflict.Kind)
	require.NotNil(t, e.Conflict.Unique)
	require.NotNil(t, e.Conflict.Source, "the incoming row")
	require.NotNil(t, e.Conflict.Target, "the row holding the value")
	require.Contains(t, e.Error, e.Conflict.Unique.Constraint)
	t.Logf("entry %d (%s, count %d): %s", e.ID, e.Direction, e.Count, e.Error)
	return e
}

// rowName returns the name of the row with id (with its own SQL), "" when
// there is none.
func rowName(t *testing.T, pool *pgxpool.Pool, table string, id int64) string {
	t.Helper()
	return textRows(t, pool, "SELECT id, name FROM "+table)[id]
}

// TestUniqueCollisionIsOneEntryWithBothRows: the same e-mail inserted on
// both sides under different ids. Each direction refuses the other's row
// on customers_email_key; the DLQ holds one pending entry (put twice)
// naming the constraint, the contested e-mail, the incoming row and the
// row already holding it, with their keys; each side keeps its own row.
// Once a person changes one e-mail, a retry of the entry brings both rows
// to both sides.
func TestUniqueCollisionIsOneEntryWithBothRows(t *testing.T) {
	t.Parallel()
	schema := func(pool *pgxpool.Pool) {
		exec(t, pool, ddl+`; ALTER TABLE customers ADD CONSTRAINT customers_email_key UNIQUE (email)`)
	}
	p := startPairOf(t, []duplex.Table{customers}, nil, nil, 0, schema)
	p.halt(t)
	exec(t, p.a.Pool, `INSERT INTO customers (id, name, email, status) VALUES (10, 'ann on a', 'ann@x', 'new')`)
	exec(t, p.b.Pool, `INSERT INTO customers (id, name, email, status) VALUES (20, 'ann on b', 'ann@x', 'new')`)
	p.start(t)
	e := uniqueEntry(t, p, 2)
	u := e.Conflict.Unique
	require.Equal(t, "customers_email_key", u.Constraint)
	require.Equal(t, []string{"email"}, u.Columns)
	require.Equal(t, "ann@x", u.Values["email"])
	rows := map[string]string{e.Direction.From: fmt.Sprint(e.Conflict.Source["name"]), e.Direction.To: fmt.Sprint(e.Conflict.Target["name"])}
	require.Equal(t, map[string]string{"a": "ann on a", "b": "ann on b"}, rows, "both rows, each from its side")
	require.Equal(t, e.Conflict.Target["id"], u.HolderKey[0].Value, "the holding row's key")
	require.NotEqual(t, e.Change.Key[0].Value, u.HolderKey[0].Value)
	require.Len(t, e.History, 1, "the other direction's version")
	require.Equal(t, map[int64]string{10: "ann on a"}, textRows(t, p.a.Pool, "SELECT id, name FROM customers"))
	require.Equal(t, map[int64]string{20: "ann on b"}, textRows(t, p.b.Pool, "SELECT id, name FROM customers"))

	_, err := p.sync.Resolve(t.Context(), &e.DeadLetter, "a")
	require.ErrorIs(t, err, duplex.ErrNotOffered, "no winner row: both rows stay")
	require.Contains(t, err.Error(), "change email on one of the two rows")

	// A person changes b's e-mail. Its change is an edit of a row a never
	// had: the merge, without a base, holds it as an entry of its own.
	// The entry's retry (the admin's) replays the held change and the
	// holding row the other way, so both rows end on both sides, then
	// retries that later entry, which finds nothing left to do.
	exec(t, p.b.Pool, `UPDATE customers SET email = 'ann2@x' WHERE id = 20`)
	waitFor(t, "b's edit held", p, func() bool { return len(allEntries(t, p)) == 2 })
	srv := adminServer(t, p)
	resp, err := http.Post(fmt.Sprintf("%s/dlq/%d/retry", srv.URL, e.ID), "", nil)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	t.Logf("retry: %s", body)
	want := map[int64]string{10: "ann on a", 20: "ann on b"}
	require.Equal(t, want, textRows(t, p.a.Pool, "SELECT id, name FROM customers"))
	require.Equal(t, want, textRows(t, p.b.Pool, "SELECT id, name FROM customers"))
	for _, e := range allEntries(t, p) {
		require.Equal(t, dlq.StatusResolved, e.Status, "entry %d %s %s: %s", e.ID, e.Direction, e.Key(), e.Error)
	}
}

// TestUniqueCollisionOnUpdate: rows 1 and 2 on both sides; a changes
// row 1's e-mail, b row 2's, to the same new value. Each side's update is
// refused by the other; one entry holds both, and every row keeps its
// own side's values.
func TestUniqueCollisionOnUpdate(t *testing.T) {
	t.Parallel()
	schema := func(pool *pgxpool.Pool) {
		exec(t, pool, ddl+`; ALTER TABLE customers ADD CONSTRAINT customers_email_key UNIQUE (email);
			INSERT INTO customers (id, name, email, status) VALUES (1, 'n1', 'e1', 'new'), (2, 'n2', 'e2', 'new');
			UPDATE customers SET updated_at = '2026-01-01'`)
	}
	p := startPairOf(t, []duplex.Table{customers}, nil, nil, 2, schema)
	p.halt(t)
	exec(t, p.a.Pool, `UPDATE customers SET email = 'same@x' WHERE id = 1`)
	exec(t, p.b.Pool, `UPDATE customers SET email = 'same@x' WHERE id = 2`)
	p.start(t)
	e := uniqueEntry(t, p, 2)
	require.Equal(t, "same@x", e.Conflict.Unique.Values["email"])
	require.Equal(t, "same@x", e.Conflict.Source["email"])
	require.Equal(t, "same@x", e.Conflict.Target["email"])
	require.Equal(t, map[int64]string{1: "same@x", 2: "e2"}, textRows(t, p.a.Pool, "SELECT id, email FROM customers"))
	require.Equal(t, map[int64]string{1: "e1", 2: "same@x"}, textRows(t, p.b.Pool, "SELECT id, email FROM customers"))
}

// TestUniqueCollisionOnCompositeConstraint: UNIQUE (tenant, email); the
// same e-mail in tenant 1 on both sides collides (one entry naming both
// columns), the same e-mail in tenant 2 does not.
func TestUniqueCollisionOnCompositeConstraint(t *testing.T) {
	t.Parallel()
	accounts := duplex.Table{Schema: "public", Name: "accounts"}
	schema := func(pool *pgxpool.Pool) {
		exec(t, pool, `CREATE TABLE accounts (id bigint PRIMARY KEY, tenant int NOT NULL, email text NOT NULL, name text NOT NULL,
			CONSTRAINT accounts_tenant_email_key UNIQUE (tenant, email))`)
	}
	p := startPairOf(t, []duplex.Table{accounts}, nil, nil, 0, schema)
	p.halt(t)
	exec(t, p.a.Pool, `INSERT INTO accounts VALUES (10, 1, 'ann@x', 'ann on a')`)
	exec(t, p.b.Pool, `INSERT INTO accounts VALUES (20, 1, 'ann@x', 'ann on b'), (30, 2, 'ann@x', 'ann in tenant 2')`)
	p.start(t)
	waitFor(t, "the tenant 2 row on a", p, func() bool { return rowName(t, p.a.Pool, "accounts", 30) == "ann in tenant 2" })
	e := uniqueEntry(t, p, 2)
	u := e.Conflict.Unique
	require.Equal(t, "accounts_tenant_email_key", u.Constraint)
	require.Equal(t, []string{"tenant", "email"}, u.Columns)
	require.Equal(t, `tenant=1,email="ann@x"`, u.ValuesText())
	require.Empty(t, rowName(t, p.b.Pool, "accounts", 10))
	require.Empty(t, rowName(t, p.a.Pool, "accounts", 20))
}

// TestUniqueCollisionWithUnsyncedRow: b holds a row the sync never saw
// (there before it started, no onboarding); a's new row with the same
// e-mail is refused by b, and the entry shows b's row and its key.
func TestUniqueCollisionWithUnsyncedRow(t *testing.T) {
	t.Parallel()
	n := 0
	schema := func(pool *pgxpool.Pool) {
		exec(t, pool, ddl+`; ALTER TABLE customers ADD CONSTRAINT customers_email_key UNIQUE (email)`)
		if n++; n == 2 {
			exec(t, pool, `INSERT INTO customers (id, name, email, status) VALUES (30, 'old ann on b', 'ann@x', 'new')`)
		}
	}
	p := startPairOf(t, []duplex.Table{customers}, nil, nil, 0, schema)
	exec(t, p.a.Pool, `INSERT INTO customers (id, name, email, status) VALUES (10, 'ann on a', 'ann@x', 'new')`)
	e := uniqueEntry(t, p, 1)
	require.Equal(t, duplex.Direction{From: "a", To: "b"}, e.Direction)
	require.Equal(t, "ann on a", e.Conflict.Source["name"])
	require.Equal(t, "old ann on b", e.Conflict.Target["name"])
	require.Equal(t, duplex.Key{{Name: "id", Value: int64(30)}}, e.Conflict.Unique.HolderKey)
	require.Empty(t, rowName(t, p.a.Pool, "customers", 30))
	require.Empty(t, rowName(t, p.b.Pool, "customers", 10))
}
