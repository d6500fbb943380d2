package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/resolve"
)

// allEntries returns every entry of the pair's DLQ, whatever its status.
func allEntries(t *testing.T, p *pair) []dlq.Entry {
	t.Helper()
	es, _, err := p.dlq.List(t.Context(), dlq.Filter{Limit: 10_000})
	require.NoError(t, err)
	return es
}

// TestHeldRowChangedThousandTimesIsOneEntry holds one row (both sides
// changed its email while the sync was stopped; every conflict goes to
// the DLQ), then changes it 1,000 times on one side: the DLQ holds one
// pending entry for the row, refreshed to its newest versions, and
// resolving it for that side leaves the newest version on both sides.
func TestHeldRowChangedThousandTimesIsOneEntry(t *testing.T) {
	t.Parallel()
	const changes = 1000
	p := startPair(t, 1, duplex.Chain(resolve.DeadLetterAll()))
	p.halt(t)
	exec(t, p.a.Pool, `UPDATE customers SET email = 'a@example.com' WHERE id = 1`)
	exec(t, p.b.Pool, `UPDATE customers SET email = 'b@example.com' WHERE id = 1`)
	p.start(t)
	for i := 1; i <= changes; i++ {
		exec(t, p.a.Pool, `UPDATE customers SET email = $1 WHERE id = 1`, fmt.Sprintf("a%d@example.com", i))
	}
	newest := fmt.Sprintf("a%d@example.com", changes)
	var entry dlq.Entry
	waitFor(t, "the held row's entry to hold a's newest version", p, func() bool {
		es := allEntries(t, p)
		if len(es) != 1 || es[0].Conflict == nil {
			return false
		}
		entry = es[0]
		tw := entry.ThreeWay([2]string{"a", "b"})
		return tw.Rows[0]["email"] == newest
	})
	require.Equal(t, dlq.StatusPending, entry.Status)
	require.Equal(t, []string{"email"}, entry.Conflict.Fields)
	require.Greater(t, entry.Count, 1, "later changes refreshed the entry")
	require.LessOrEqual(t, len(entry.History), dlq.HistoryLimit)
	t.Logf("1 entry for %d changes of the held row: count %d, %d superseded versions kept", changes, entry.Count, len(entry.History))

	res, err := p.sync.Resolve(t.Context(), &entry.DeadLetter, "a")
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeApplied, res.Outcome, res.Detail)
	_, err = p.dlq.SetStatus(t.Context(), entry.ID, []dlq.Status{dlq.StatusPending}, dlq.StatusResolved, "test", "winner=a")
	require.NoError(t, err)
	for _, db := range []*pgxpool.Pool{p.a.Pool, p.b.Pool} {
		var email string
		require.NoError(t, db.QueryRow(t.Context(), `SELECT email FROM customers WHERE id = 1`).Scan(&email))
		require.Equal(t, newest, email)
	}
	// The row flows again: a later change reaches the other side.
	exec(t, p.b.Pool, `UPDATE customers SET email = 'after@example.com' WHERE id = 1`)
	waitFor(t, "a later change to flow", p, func() bool {
		return rowsOf(t, p.a.Pool)[1] == rowsOf(t, p.b.Pool)[1] && strings.Contains(rowsOf(t, p.a.Pool)[1], "after@")
	})
	require.Len(t, allEntries(t, p), 1, "no new entry")
}

// TestPeerBlockedSixtySecondsUnderLoad blocks database b for 60 s (no
// connection allowed, every session terminated) while both sides write:
// the sync waits the outage out, nothing goes to the DLQ, and both sides
// converge once b is back.
func TestPeerBlockedSixtySecondsUnderLoad(t *testing.T) {
	t.Parallel()
	const rows = 50
	p := startPair(t, rows, nil)
	ctx := t.Context()
	admin := p.a.Pool // same cluster: ALTER DATABASE and pg_terminate_backend on b from a's sessions
	block := func(allow bool) {
		_, err := admin.Exec(context.WithoutCancel(ctx), fmt.Sprintf(`ALTER DATABASE %q ALLOW_CONNECTIONS %t`, p.b.Name, allow))
		require.NoError(t, err)
	}
	terminate := func() {
		_, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, p.b.Name)
		require.NoError(t, err)
	}
	t.Cleanup(func() { block(true) })

	// Load: a writes all along; b writes before and after the outage.
	var (
		wg      sync.WaitGroup
		written atomic.Int64
		bDown   atomic.Bool
	)
	stop := make(chan struct{})
	writer := func(side string, pool *pgxpool.Pool, ids []int) {
		defer wg.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if side == "b" && bDown.Load() {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond): // pacing the load, not synchronising
				}
				continue
			}
			id := ids[n%len(ids)]
			// Each side edits its own rows: the outcome is known.
			if _, err := pool.Exec(ctx, `UPDATE customers SET name = $1, visits = visits + 1 WHERE id = $2`, fmt.Sprintf("%s%d", side, n), id); err == nil {
				written.Add(1)
			}
		}
	}
	var odd, even []int
	for id := 1; id <= rows; id++ {
		if id%2 == 1 {
			odd = append(odd, id)
		} else {
			even = append(even, id)
		}
	}
	wg.Add(2)
	go writer("a", p.a.Pool, odd)
	go writer("b", p.b.Pool, even)
	waitFor(t, "load to reach b", p, func() bool { return written.Load() > 200 && p.events.settled() > 100 })

	bDown.Store(true)
	block(false)
	terminate()
	outage := time.After(60 * time.Second)
	for done := false; !done; {
		select {
		case <-outage:
			done = true
		case <-time.After(2 * time.Second):
			terminate() // anything that slipped in before the block
		case err := <-p.done:
			t.Fatalf("sync stopped during the outage: %v", err)
		}
	}
	require.Empty(t, allEntries(t, p), "an outage is a wait, not a dead letter")
	block(true)
	bDown.Store(false)
	waitFor(t, "b to write again", p, func() bool {
		before := written.Load()
		_, err := p.b.Pool.Exec(ctx, `SELECT 1`)
		return err == nil && written.Load() > before
	})
	close(stop)
	wg.Wait()
	waitFor(t, "both sides to converge", p, func() bool {
		a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
		if len(a) != rows {
			return false
		}
		for id, v := range a {
			if b[id] != v {
				return false
			}
		}
		return true
	})
	require.Empty(t, allEntries(t, p), "zero DLQ entries after the outage")
	t.Logf("%d writes, b blocked for 60 s: converged, 0 DLQ entries", written.Load())
}

// waitFor polls cond until it holds, failing after 3 minutes or when the
// sync stops.
func waitFor(t *testing.T, what string, p *pair, cond func() bool) {
	t.Helper()
	deadline := time.After(3 * time.Minute)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case err := <-p.done:
			t.Fatalf("sync stopped while waiting for %s: %v", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
