package pglogical_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pglogical"
)

const (
	killRows  = 5000 // rows written
	killPerTx = 100  // rows per transaction
)

// TestKillAndResume stops a source abruptly in the middle of a
// transaction, after its Pipeline settled only part of what it received,
// and checks that a new source on the same slot delivers everything after
// the last acknowledged position, with the same IDs for what it delivers
// again.
func TestKillAndResume(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"cancel", "terminate_walsender"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testKillAndResume(t, mode == "terminate_walsender")
		})
	}
}

func testKillAndResume(t *testing.T, terminate bool) {
	e := newEnv(t, fmt.Sprintf(createTable, "items"))
	small := func(c *pglogical.Config) { c.BatchSize = 37 }
	src := e.setupSource(small, "items")
	slot := src.Slot()

	// The Pipeline settles up to change ackAt (the 2,345th, in the middle of
	// the 24th transaction) and no further; the process dies after killAt
	// changes were delivered, in the middle of a transaction.
	const ackAt, killAt = 2345, 3517
	var (
		mu        sync.Mutex
		delivered int
		acked     duplex.Change
	)
	atKill := make(chan struct{})
	proceed := make(chan struct{})
	s := startStream(t, src, streamOpts{onBatch: func(ctx context.Context, b []duplex.Change) error {
		mu.Lock()
		first := delivered
		delivered += len(b)
		n := delivered
		mu.Unlock()
		if first < ackAt {
			c := b[min(ackAt-first, len(b))-1]
			if err := src.Ack(ctx, c.Position); err != nil {
				return err
			}
			mu.Lock()
			acked = c
			mu.Unlock()
		}
		if n >= killAt && idOf(t, b[len(b)-1])%killPerTx != 0 { // mid-transaction
			select {
			case <-atKill:
			default:
				close(atKill)
			}
			select { // the process "hangs" here until it is killed
			case <-proceed:
			case <-ctx.Done():
			}
		}
		return nil
	}})

	writeErr := make(chan error, 1)
	go func() { writeErr <- insertRows(context.Background(), e, 1, killRows+1, killPerTx) }()

	select {
	case <-atKill:
	case <-s.done:
		t.Fatalf("stream ended: %v", s.err)
	}
	mu.Lock()
	last := acked
	mu.Unlock()
	require.Equal(t, int64(ackAt), idOf(t, last), "acknowledged change")
	// Wait until the acknowledgement reached the server, so the restart
	// point is known: at or after the end of the transaction before the
	// partly settled one (the server's idle position may be later), and not
	// past the partly settled transaction's commit.
	resume, commit := posResume(t, last.Position), posCommit(t, last.Position)
	require.Eventually(t, func() bool { return e.confirmed(slot) >= resume }, waitFor, pollEvery,
		"confirmed_flush_lsn never reached the acknowledged restart point %s", resume)
	require.LessOrEqual(t, e.confirmed(slot), commit, "confirmed position passed an unsettled change")

	if terminate {
		pid := e.walsender(slot)
		require.NotZero(t, pid)
		e.terminate(pid)
	}
	require.NoError(t, s.stop())
	close(proceed)
	first := drain(s)
	require.GreaterOrEqual(t, len(first), killAt)
	require.Less(t, len(first), killRows, "the kill must come before the end")
	for i, c := range first {
		require.Equal(t, int64(i+1), idOf(t, c), "first run, change %d", i)
	}
	require.NoError(t, <-writeErr)
	// The slot did not move past the unsettled transaction.
	require.LessOrEqual(t, e.confirmed(slot), commit)

	// Restart: a new source on the same slot.
	src2 := e.source(e.config("items"))
	s2 := startStream(t, src2, streamOpts{ack: true})
	// Redelivery starts with the first change of the partly settled
	// transaction.
	start := (ackAt - 1) / killPerTx * killPerTx // index of that change
	again := s2.next(killRows - start)
	for i, c := range again {
		id := int64(start + i + 1)
		require.Equal(t, id, idOf(t, c), "second run, change %d", i)
		require.Equal(t, duplex.OpInsert, c.Op)
		require.Equal(t, fmt.Sprintf("row %d", id), c.After["name"])
		if int(id) <= len(first) {
			p := first[id-1]
			require.Equal(t, p.ID, c.ID, "redelivered change %d keeps its ID", id)
			// Same commit and ordinal; the restart point may be later (the
			// slot's confirmed position), but not past the commit.
			require.Equal(t, string(p.Position)[:25], string(c.Position)[:25], "redelivered change %d keeps its place", id)
			if id%killPerTx != 0 { // the last change of a transaction restarts after it
				require.LessOrEqual(t, posResume(t, c.Position), posCommit(t, c.Position), "change %d", id)
			}
			require.True(t, p.CommitTime.Equal(c.CommitTime))
		}
		require.True(t, pglogrepl.LSN(0) < posCommit(t, c.Position))
	}
	require.Equal(t, last.ID, again[ackAt-1-start].ID)
	s2.none()
	require.NoError(t, s2.stop())
}

// drain returns what a stopped stream forwarded and the test did not read.
func drain(s *stream) []duplex.Change {
	var out []duplex.Change
	for {
		select {
		case c := <-s.ch:
			out = append(out, c)
		default:
			return out
		}
	}
}

// TestReconnect terminates the walsender several times while a source
// streams, some of the time in the middle of a transaction, with the
// Pipeline's acknowledgements lagging: the same Stream call reconnects,
// skips what it already delivered, and delivers everything exactly once.
func TestReconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"))
	src := e.setupSource(func(c *pglogical.Config) { c.BatchSize = 50 }, "items")
	slot := src.Slot()

	// Acknowledge with a lag of 300 changes, so a reconnect replays
	// changes that were already delivered.
	const lag = 300
	var (
		mu        sync.Mutex
		positions []duplex.Position
	)
	// The kill points: after the 1,050th change (in the middle of the 11th
	// transaction) and so on. fn waits there until the walsender is killed.
	killAt := map[int]bool{1050: true, 2050: true, 3025: true, 4000: true}
	reached := make(chan int, len(killAt))
	killed := make(chan struct{}, len(killAt))
	s := startStream(t, src, streamOpts{onBatch: func(ctx context.Context, b []duplex.Change) error {
		mu.Lock()
		for _, c := range b {
			positions = append(positions, c.Position)
		}
		n := len(positions)
		var ack duplex.Position
		if n > lag {
			ack = positions[n-lag-1]
		}
		mu.Unlock()
		if ack != "" {
			if err := src.Ack(ctx, ack); err != nil {
				return err
			}
		}
		for k := range killAt {
			if n-len(b) < k && k <= n {
				reached <- k
				select {
				case <-killed:
				case <-ctx.Done():
				}
			}
		}
		return nil
	}})

	// Write transaction by transaction. After writing the transaction that
	// holds a kill point, wait for the source to reach it and kill its
	// walsender, so each reconnect is in the middle of the stream (and of
	// a transaction), with later transactions not yet written.
	var pids []int
	var got []duplex.Change
	for tx := range killRows / killPerTx {
		require.NoError(t, insertRows(t.Context(), e, tx*killPerTx+1, (tx+1)*killPerTx+1, killPerTx))
		for k := range killAt {
			if k <= tx*killPerTx || k > (tx+1)*killPerTx {
				continue
			}
			select {
			case r := <-reached:
				require.Equal(t, k, r)
			case <-s.done:
				t.Fatalf("stream ended: %v", s.err)
			case <-time.After(waitFor):
				t.Fatalf("kill point %d not reached", k)
			}
			var pid int
			require.Eventually(t, func() bool {
				err := e.db.Pool.QueryRow(context.Background(), `SELECT coalesce(max(pid), 0) FROM pg_stat_replication
					WHERE application_name = $1 AND state IN ('catchup', 'streaming')`, slot).Scan(&pid)
				return err == nil && pid != 0
			}, waitFor, pollEvery, "no walsender for %s", slot)
			require.NotContains(t, pids, pid, "kill at %d: walsender %d was killed before", k, pid)
			e.terminate(pid)
			pids = append(pids, pid)
			killed <- struct{}{}
		}
	}
	got = append(got, s.next(killRows)...)
	require.Len(t, pids, len(killAt), "walsenders killed")
	s.none()
	seen := map[string]bool{}
	for i, c := range got {
		require.Equal(t, int64(i+1), idOf(t, c), "change %d", i)
		require.False(t, seen[c.ID], "duplicate ID %s", c.ID)
		seen[c.ID] = true
		if i > 0 {
			require.Less(t, string(got[i-1].Position), string(c.Position), "positions increase")
		}
	}
	// The stream is still alive on a new walsender.
	require.NoError(t, insertRows(t.Context(), e, killRows+1, killRows+2, 1))
	require.Equal(t, int64(killRows+1), idOf(t, s.next(1)[0]))
	pid := e.walsender(slot)
	require.NotContains(t, pids, pid)
	require.NoError(t, s.stop())
}

// TestStreamAgainOnSameSource calls Stream again on the same Source after
// fn failed: the new call starts after what was acknowledged (or after
// from), not after what the failed call had delivered.
func TestStreamAgainOnSameSource(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"))
	src := e.setupSource(func(c *pglogical.Config) { c.BatchSize = 10 }, "items")
	require.NoError(t, insertRows(t.Context(), e, 1, 101, 100))
	boom := errors.New("boom")
	var got []duplex.Change
	err := src.Stream(t.Context(), "", func(ctx context.Context, b []duplex.Change) error {
		got = append(got, b...)
		if len(got) >= 30 && len(got)-len(b) < 30 {
			if err := src.Ack(ctx, got[29].Position); err != nil {
				return err
			}
		}
		if len(got) >= 50 {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, err, boom)

	// from "": after what was acknowledged (change 30).
	s := startStream(t, src, streamOpts{})
	again := s.next(70)
	for i, c := range again {
		require.Equal(t, int64(31+i), idOf(t, c))
		if i < 20 {
			require.Equal(t, got[30+i].ID, c.ID)
		}
	}
	require.NoError(t, s.stop())

	// from a stored position (change 20): after it.
	s = startStream(t, src, streamOpts{from: got[19].Position})
	again = s.next(80)
	for i, c := range again {
		require.Equal(t, int64(21+i), idOf(t, c))
	}
	require.NoError(t, s.stop())
}
