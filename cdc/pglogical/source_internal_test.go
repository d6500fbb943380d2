package pglogical

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
)

// TestUndeliveredBatchIsNotDelivered loses the replication connection while
// the receiver waits to hand a batch over (the Pipeline is busy): the batch
// must not count as delivered, or the reconnect would skip it.
func TestUndeliveredBatchIsNotDelivered(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	_, err := db.Pool.Exec(ctx, "CREATE TABLE items (id bigint PRIMARY KEY, name text)")
	require.NoError(t, err)
	s, err := New(ctx, Config{
		ConnString: db.URL, Sync: testenv.UniqueName(t, "s"), System: "a",
		Tables:             []duplex.Table{{Schema: "public", Name: "items"}},
		SetReplicaIdentity: true, BatchSize: 5, StatusInterval: 5 * time.Millisecond,
	})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Setup(ctx, false))
	_, err = db.Pool.Exec(ctx, "INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) g")
	require.NoError(t, err)

	// As streamOnce does: start at the slot's confirmed position, which is
	// what status updates report while nothing is acknowledged.
	var confirmed string
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", s.slot).Scan(&confirmed))
	startLSN, err := pglogrepl.ParseLSN(confirmed)
	require.NoError(t, err)
	s.flushed = startLSN
	conn, err := s.replicationConn(ctx)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	require.NoError(t, pglogrepl.StartReplication(ctx, conn, s.slot, startLSN, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + strings.ReplaceAll(s.slot, "'", "''") + "'"},
	}))
	out := make(chan []duplex.Change) // nobody reads after the first batch
	errc := make(chan error, 1)
	go func() { errc <- s.receive(ctx, conn, startLSN, pos{}, out) }()
	var first []duplex.Change
	select {
	case first = <-out:
	case err := <-errc:
		t.Fatalf("receive ended: %v", err)
	}
	want, err := parsePos(first[len(first)-1].Position)
	require.NoError(t, err)
	// Wait until the receiver holds the next batch, counted as in flight
	// while it waits for the channel.
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return want.before(s.delivered)
	}, time.Minute, time.Millisecond)
	// The network fails: the next status update cannot be sent. (Killing
	// the walsender does not do: it cannot exit while its socket's buffers
	// are full, since nobody reads them.)
	require.NoError(t, conn.Conn().Close())
	select {
	case err := <-errc:
		require.Error(t, err)
	case <-time.After(time.Minute):
		t.Fatal("receive did not notice the lost connection")
	}
	s.mu.Lock()
	got := s.delivered
	s.mu.Unlock()
	require.Equal(t, want, got, "delivered must be the last change handed over")
}
