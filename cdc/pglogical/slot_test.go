package pglogical_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pglogical"
)

// heavyWrites writes about 10 MB of WAL into table, which the source does
// not publish.
func heavyWrites(t *testing.T, e *env, table string, from int) pglogrepl.LSN {
	t.Helper()
	before := e.currentLSN()
	e.exec(fmt.Sprintf("INSERT INTO %s (id, name, n) SELECT g, repeat('x', 200), g FROM generate_series($1::bigint, $1::bigint + 39999) g", table), from)
	after := e.currentLSN()
	require.Greater(t, uint64(after-before), uint64(8<<20), "heavy writes wrote %d bytes of WAL", after-before)
	return after
}

// replied waits until the walsender of slot has sent everything up to lsn
// and then received a status update from the source.
func replied(t *testing.T, e *env, slot string, lsn pglogrepl.LSN) {
	t.Helper()
	var since time.Time
	require.Eventually(t, func() bool {
		var sent string
		err := e.db.Pool.QueryRow(context.Background(), `SELECT sent_lsn::text, now() FROM pg_stat_replication
			WHERE application_name = $1`, slot).Scan(&sent, &since)
		if err != nil {
			return false
		}
		s, err := pglogrepl.ParseLSN(sent)
		return err == nil && s >= lsn
	}, waitFor, pollEvery, "walsender never sent %s", lsn)
	require.Eventually(t, func() bool {
		var n int
		err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_replication
			WHERE application_name = $1 AND reply_time > $2`, slot, since).Scan(&n)
		return err == nil && n == 1
	}, waitFor, pollEvery, "no status update after %v", since)
}

// TestIdleSlotAdvances checks that a source whose tables are idle lets its
// slot advance over other tables' writes when everything delivered is
// settled (so the server can recycle WAL), and never past a change that is
// delivered but not settled.
func TestIdleSlotAdvances(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"), fmt.Sprintf(createTable, "other"))
	src := e.setupSource(nil, "items")
	slot := src.Slot()
	var ack atomic.Bool
	ack.Store(true)
	s := startStream(t, src, streamOpts{onBatch: func(ctx context.Context, b []duplex.Change) error {
		if ack.Load() {
			return src.Ack(ctx, b[len(b)-1].Position)
		}
		return nil
	}})

	// Everything settled, items idle, heavy writes to other.
	e.exec("INSERT INTO items (id, name, n) VALUES (1, 'a', 1)")
	s.next(1)
	end := heavyWrites(t, e, "other", 1)
	require.Eventually(t, func() bool { return e.confirmed(slot) >= end }, waitFor, pollEvery,
		"confirmed_flush_lsn did not advance over unpublished writes to %s", end)
	require.Eventually(t, func() bool {
		n, err := src.RetainedWAL(context.Background())
		require.NoError(t, err)
		return n < 2<<20
	}, waitFor, pollEvery, "retained WAL stays large")

	// A change delivered and not settled holds the slot back, whatever is
	// written elsewhere.
	ack.Store(false)
	e.exec("INSERT INTO items (id, name, n) VALUES (2, 'b', 2)")
	c := s.next(1)[0]
	commit := posCommit(t, c.Position)
	end = heavyWrites(t, e, "other", 100000)
	replied(t, e, slot, end)
	require.LessOrEqual(t, e.confirmed(slot), commit, "the slot passed an unsettled change")
	n, err := src.RetainedWAL(t.Context())
	require.NoError(t, err)
	require.Greater(t, n, int64(8<<20), "the unsettled change retains the WAL after it")

	// Once it is settled, the slot catches up.
	require.NoError(t, src.Ack(t.Context(), c.Position))
	require.Eventually(t, func() bool { return e.confirmed(slot) >= end }, waitFor, pollEvery,
		"confirmed_flush_lsn did not advance after the acknowledgement")
	s.none()
	require.NoError(t, s.stop())
}

// TestHeartbeat checks that Config.Heartbeat writes logical messages into
// the WAL while the source's database is idle, and that the slot advances
// over them.
func TestHeartbeat(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"))
	src := e.setupSource(func(c *pglogical.Config) { c.Heartbeat = 20 * time.Millisecond }, "items")
	slot := src.Slot()
	s := startStream(t, src, streamOpts{ack: true})
	start := e.currentLSN()
	require.Eventually(t, func() bool { return e.confirmed(slot) > start }, waitFor, pollEvery,
		"confirmed_flush_lsn did not advance past %s", start)
	// The heartbeats are in the WAL (pg_walinspect ships with PostgreSQL).
	if _, err := e.db.Pool.Exec(t.Context(), "CREATE EXTENSION IF NOT EXISTS pg_walinspect"); err != nil {
		t.Logf("pg_walinspect not available, not checking the WAL: %v", err)
	} else {
		require.Eventually(t, func() bool {
			var n int
			err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_get_wal_records_info($1::text::pg_lsn, pg_current_wal_flush_lsn())
				WHERE resource_manager = 'LogicalMessage' AND description LIKE '%duplex_heartbeat%'`, start.String()).Scan(&n)
			require.NoError(t, err)
			return n >= 2
		}, waitFor, pollEvery, "no heartbeat messages in the WAL")
	}
	// Heartbeats carry no rows.
	e.exec("INSERT INTO items (id, name, n) VALUES (1, 'a', 1)")
	require.Equal(t, int64(1), idOf(t, s.next(1)[0]))
	s.none()
	require.NoError(t, s.stop())
}

// TestDroppedSlot drops the slot while a source streams: Stream must return
// a permanent error saying so, and must not create a new slot (which would
// silently skip the changes made in between).
func TestDroppedSlot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"))
	src := e.setupSource(func(c *pglogical.Config) {
		// Reconnect slowly enough for the test to drop the slot in between.
		c.ReconnectMin, c.ReconnectMax = 300*time.Millisecond, 600*time.Millisecond
	}, "items")
	slot := src.Slot()
	s := startStream(t, src, streamOpts{ack: true})
	e.exec("INSERT INTO items (id, name, n) VALUES (1, 'a', 1)")
	s.next(1)

	require.Eventually(t, func() bool {
		_, _ = e.db.Pool.Exec(context.Background(), `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		_, err := e.db.Pool.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", slot)
		return err == nil
	}, waitFor, pollEvery, "could not drop the slot")
	e.exec("INSERT INTO items (id, name, n) VALUES (2, 'b', 2)") // lost for the sync

	err := s.wait(waitFor)
	require.Error(t, err)
	require.ErrorContains(t, err, slot)
	require.ErrorContains(t, err, "does not exist")
	require.ErrorContains(t, err, "dropped")
	require.True(t, duplex.IsPermanent(err), "permanent: %v", err)
	s.none()
	var n int
	require.NoError(t, e.db.Pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n))
	require.Zero(t, n, "the slot was re-created")
}

// TestStoredPositionWithoutSlot starts a source from a stored position on a
// database where its slot does not exist: that is an error (changes may
// have been lost), never a reason to create the slot.
func TestStoredPositionWithoutSlot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"))
	src := e.source(e.config("items"))
	const stored = duplex.Position("0000000001000000/00000002/0000000000F00000")

	err := src.Setup(t.Context(), true)
	require.ErrorContains(t, err, "does not exist, but the sync has a stored position")
	require.ErrorContains(t, err, src.Slot())
	require.True(t, duplex.IsPermanent(err))

	err = src.Stream(t.Context(), stored, func(context.Context, []duplex.Change) error {
		t.Error("fn called")
		return nil
	})
	require.ErrorContains(t, err, "does not exist, but the sync has a stored position")
	require.True(t, duplex.IsPermanent(err))

	var n int
	require.NoError(t, e.db.Pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", src.Slot()).Scan(&n))
	require.Zero(t, n, "the slot was created")

	// A malformed position is a permanent error too.
	err = src.Stream(t.Context(), "garbage", func(context.Context, []duplex.Change) error { return nil })
	require.ErrorContains(t, err, "invalid position")
	require.True(t, duplex.IsPermanent(err))
}

// TestSlotInUse runs two sources on one slot: the second must give up with
// an error naming the cause after SlotBusyTimeout, while the first goes on.
func TestSlotInUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"))
	src := e.setupSource(nil, "items")
	s := startStream(t, src, streamOpts{ack: true})
	e.exec("INSERT INTO items (id, name, n) VALUES (1, 'a', 1)")
	s.next(1)

	cfg := e.config("items")
	cfg.SlotBusyTimeout = 300 * time.Millisecond
	second := e.source(cfg)
	begin := time.Now()
	err := second.Stream(t.Context(), "", func(context.Context, []duplex.Change) error {
		t.Error("the second source delivered changes")
		return nil
	})
	elapsed := time.Since(begin)
	require.ErrorContains(t, err, "is in use by another process")
	require.ErrorContains(t, err, src.Slot())
	require.True(t, duplex.IsPermanent(err))
	require.GreaterOrEqual(t, elapsed, cfg.SlotBusyTimeout, "gave up before SlotBusyTimeout")

	// The first source is unaffected.
	e.exec("INSERT INTO items (id, name, n) VALUES (2, 'b', 2)")
	require.Equal(t, int64(2), idOf(t, s.next(1)[0]))
	require.NoError(t, s.stop())

	// Once the first has stopped, a new source takes the slot over (its
	// walsender may take a moment to exit: the busy wait covers it).
	third := e.source(e.config("items"))
	s3 := startStream(t, third, streamOpts{ack: true})
	e.exec("INSERT INTO items (id, name, n) VALUES (3, 'c', 3)")
	for { // change 2 may come again: its acknowledgement may not have reached the server
		id := idOf(t, s3.next(1)[0])
		require.GreaterOrEqual(t, id, int64(2))
		if id == 3 {
			break
		}
	}
	require.NoError(t, s3.stop())
}

// TestStreamAgainKeepsUnsettledChanges stops a Stream while a change is
// delivered and not settled, after the server moved on (other tables'
// writes), and streams again with the same Source: the slot must not be
// moved past the unsettled change on the strength of the earlier call's
// idle position.
func TestStreamAgainKeepsUnsettledChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"), fmt.Sprintf(createTable, "other"))
	src := e.setupSource(nil, "items")
	slot := src.Slot()
	s := startStream(t, src, streamOpts{})
	e.exec("INSERT INTO items (id, name, n) VALUES (1, 'a', 1)")
	c := s.next(1)[0]
	commit := posCommit(t, c.Position)
	end := heavyWrites(t, e, "other", 1)
	replied(t, e, slot, end) // the source has seen the server move past the change
	require.NoError(t, s.stop())
	require.LessOrEqual(t, e.confirmed(slot), commit)

	s = startStream(t, src, streamOpts{})
	again := s.next(1)[0]
	require.Equal(t, c.ID, again.ID, "the unsettled change comes again")
	end = heavyWrites(t, e, "other", 100000)
	replied(t, e, slot, end)
	require.LessOrEqual(t, e.confirmed(slot), commit, "the slot passed an unsettled change")
	require.NoError(t, src.Ack(t.Context(), again.Position))
	require.Eventually(t, func() bool { return e.confirmed(slot) >= end }, waitFor, pollEvery)
	require.NoError(t, s.stop())
}

// TestQuietStreamDeliversAtOnce: a transaction written alone is delivered
// once the stream goes quiet, long before a batch's Linger has passed, and
// a transaction's changes still come in one batch.
func TestQuietStreamDeliversAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"))
	const linger = 20 * time.Second
	src := e.setupSource(func(c *pglogical.Config) { c.Linger = linger }, "items")
	var batches atomic.Int32
	s := startStream(t, src, streamOpts{onBatch: func(context.Context, []duplex.Change) error {
		batches.Add(1)
		return nil
	}})
	start := time.Now()
	e.exec("INSERT INTO items (id, name, n) SELECT g, 'a', g FROM generate_series(1, 3) g")
	got := s.next(3)
	require.Less(t, time.Since(start), linger/2, "the batch waited for its Linger")
	require.Equal(t, int32(1), batches.Load(), "one transaction, one batch")
	require.Equal(t, int64(3), idOf(t, got[2]))
	require.NoError(t, s.stop())
}
