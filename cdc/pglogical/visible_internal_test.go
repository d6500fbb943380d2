package pglogical

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
)

// WaitVisible holds until the transaction of a delivered position is
// visible to a new snapshot: here a transaction kept open stands for one
// whose commit the walsender sent before the backend finished committing.
func TestWaitVisibleWaitsForTheTransaction(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(ctx, "CREATE TABLE vis (id int PRIMARY KEY)")
	require.NoError(t, err)
	src, err := New(ctx, Config{ConnString: db.URL, Sync: testenv.UniqueName(t, "v"), System: "a",
		Tables: []duplex.Table{{Schema: "public", Name: "vis"}}})
	require.NoError(t, err)
	t.Cleanup(src.Close)

	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	started := false // once the committing goroutine runs, it owns tx
	defer func() {
		if !started {
			_ = tx.Rollback(context.Background())
		}
	}()
	var xid int64
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint & 4294967295").Scan(&xid))
	_, err = tx.Exec(ctx, "INSERT INTO vis VALUES (1)")
	require.NoError(t, err)
	lsn := pglogrepl.LSN(0x2000)
	src.noteXid(lsn, uint32(xid))
	p := pos{commit: lsn, resume: lsn}.position()

	short, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	err = src.WaitVisible(short, []duplex.Position{p})
	require.Error(t, err, "the transaction is still running")
	require.True(t, duplex.ClassOf(err) == duplex.ClassUnavailable, "%v", err)

	committed, done := make(chan time.Time, 1), make(chan error, 1)
	started = true
	go func() {
		time.Sleep(50 * time.Millisecond)
		committed <- time.Now()
		done <- tx.Commit(context.Background())
	}()
	require.NoError(t, src.WaitVisible(ctx, []duplex.Position{p}))
	require.False(t, time.Now().Before(<-committed), "returned before the commit")
	require.NoError(t, <-done)
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT count(*) FROM vis").Scan(&n))
	require.Equal(t, 1, n, "a read after WaitVisible sees the row")

	// Positions of unknown transactions (acknowledged, or never seen) do
	// not wait; an acknowledgement forgets the transactions before it.
	require.NoError(t, src.WaitVisible(ctx, []duplex.Position{pos{commit: 0x9999}.position()}))
	require.NoError(t, src.Ack(ctx, pos{commit: 0x3000, resume: 0x3000}.position()))
	src.mu.Lock()
	require.Empty(t, src.xids)
	src.mu.Unlock()
}

// TestXidPrecedes: transaction IDs compare modulo 2^32, across the
// wraparound.
func TestXidPrecedes(t *testing.T) {
	for _, c := range []struct {
		a, b uint32
		want bool
	}{
		{100, 200, true}, {200, 100, false}, {100, 100, false},
		{4294967290, 5, true}, {5, 4294967290, false},
	} {
		require.Equal(t, c.want, xidPrecedes(c.a, c.b), "%d precedes %d", c.a, c.b)
	}
}
