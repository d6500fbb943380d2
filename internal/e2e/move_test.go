package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/dlq"
)

// waitRows waits until cond holds for both databases' customers.
func waitRows(t *testing.T, p *pair, what string, cond func(a, b map[int64]string) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
		if cond(a, b) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached in 60s:\na: %v\nb: %v", what, a, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPrimaryKeyUpdateMoves: an UPDATE of the primary key (the tables have
// REPLICA IDENTITY FULL) arrives on the other side as a move, in both
// directions: the old key gone, the new key present, the row equal.
func TestPrimaryKeyUpdateMoves(t *testing.T) {
	t.Parallel()
	p := startPair(t, 5, nil)
	exec(t, p.a.Pool, `UPDATE customers SET id = 100 WHERE id = 1`)
	exec(t, p.b.Pool, `UPDATE customers SET id = 200, name = 'moved-on-b' WHERE id = 2`)
	waitRows(t, p, "both moves on both sides", func(a, b map[int64]string) bool {
		_, a1 := a[1]
		_, b2 := b[2]
		return len(a) == 5 && !a1 && !b2 && a[100] != "" && b[100] == a[100] && a[200] == "(moved-on-b,e2,new,0)" && b[200] == a[200] && len(b) == 5
	})
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{Limit: 10})
	require.NoError(t, err)
	require.Empty(t, entries)
}

// TestPrimaryKeyMoveCollisionKeepsBothRows: a moves row 3 to key 300 while
// b has a different row 300 of its own. The collision goes to the DLQ with
// both rows; b keeps its row 300 and, since the moved row could not be
// written there, its row 3 too: a row is never deleted when its
// replacement was not written.
func TestPrimaryKeyMoveCollisionKeepsBothRows(t *testing.T) {
	t.Parallel()
	p := startPair(t, 5, nil)
	p.halt(t)
	exec(t, p.b.Pool, `INSERT INTO customers (id, name, email, status) VALUES (300, 'b-own', 'b@x', 'new')`)
	exec(t, p.a.Pool, `UPDATE customers SET id = 300 WHERE id = 3`)
	p.start(t)
	var entries []dlq.Entry
	deadline := time.Now().Add(60 * time.Second)
	for len(entries) < 2 && time.Now().Before(deadline) {
		var err error
		entries, _, err = p.dlq.List(t.Context(), dlq.Filter{Limit: 10})
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond)
	}
	a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
	require.Equal(t, "(n3,e3,new,0)", a[300], "a keeps its moved row")
	require.Equal(t, "(b-own,b@x,new,0)", b[300], "b keeps its own row 300")
	require.Equal(t, "(n3,e3,new,0)", b[3], "b keeps row 3: its replacement was not written")
	var sawCollision, sawHeldMove bool
	for _, e := range entries {
		dl := e.DeadLetter
		switch dl.Change.Key.String() {
		case "id=300":
			sawCollision = true
			require.NotNil(t, dl.Conflict, "%+v", dl)
			names := []any{dl.Conflict.Source["name"], dl.Conflict.Target["name"]}
			require.ElementsMatch(t, []any{"n3", "b-own"}, names, "both rows, intact")
		case "id=3":
			sawHeldMove = true
			require.Contains(t, dl.Error, "moved to id=300")
		}
	}
	require.True(t, sawCollision, "the collision is in the DLQ: %+v", entries)
	require.True(t, sawHeldMove, "the old key's delete is held with it: %+v", entries)
}
