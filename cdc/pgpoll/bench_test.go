package pgpoll_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pgpoll"
)

// TestBenchmarkPolling measures capture throughput (rows/s from a backlog)
// and lag at a steady 2,000 rows/s written. Run it with
//
//	DUPLEX_BENCH=1 go test -run TestBenchmarkPolling -v ./cdc/pgpoll/
//
// It is a test, not a Benchmark, because it reports several figures from
// long runs; it prints them and checks nothing about speed.
func TestBenchmarkPolling(t *testing.T) {
	if os.Getenv("DUPLEX_BENCH") != "1" {
		t.Skip("set DUPLEX_BENCH=1 to run")
	}
	t.Run("Capture", func(t *testing.T) {
		const rows = 100_000
		h := newHarness(t, nil)
		_, err := h.db.Pool.Exec(t.Context(), "INSERT INTO items (id, name, n) SELECT i, 'bulk row ' || i, i FROM generate_series(1, $1::int) i", rows)
		require.NoError(t, err)
		_, err = h.db.Pool.Exec(t.Context(), "ANALYZE items")
		require.NoError(t, err)
		start := time.Now()
		c := consume(t, h.newSource(), "", true)
		c.waitFor(rows)
		d := time.Since(start)
		c.stop()
		t.Logf("capture: %d rows in %v: %.0f rows/s (PageSize 1000, Ack per batch)", rows, d.Round(time.Millisecond), rows/d.Seconds())

		// The same rows updated: each change carries Before from poll_rows.
		_, err = h.db.Pool.Exec(t.Context(), "UPDATE items SET n = n + 1")
		require.NoError(t, err)
		start = time.Now()
		c = consume(t, h.newSource(), "", true)
		c.waitFor(rows)
		d = time.Since(start)
		c.stop()
		t.Logf("capture of updates (Before from the stored images): %d rows in %v: %.0f rows/s", rows, d.Round(time.Millisecond), rows/d.Seconds())
	})
	for _, interval := range []time.Duration{200 * time.Millisecond, 50 * time.Millisecond} {
		t.Run("Lag"+interval.String(), func(t *testing.T) {
			steadyLag(t, interval)
		})
	}
}

// steadyLag writes 2,000 rows/s (20 every 10ms) for 10s and reports the
// lag from each row's timestamp to its delivery.
func steadyLag(t *testing.T, interval time.Duration) {
	const perTick, tick, run = 20, 10 * time.Millisecond, 10 * time.Second
	h := newHarness(t, func(c *pgpoll.Config) { c.Interval = interval })
	var mu sync.Mutex
	var lags []time.Duration
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	src := h.newSource()
	done := make(chan error, 1)
	go func() {
		done <- src.Stream(ctx, "", func(ctx context.Context, b []duplex.Change) error {
			now := time.Now()
			mu.Lock()
			for _, c := range b {
				lags = append(lags, now.Sub(c.CommitTime))
			}
			mu.Unlock()
			return src.Ack(ctx, b[len(b)-1].Position)
		})
	}()
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	deadline := time.Now().Add(run)
	next := int64(1)
	for time.Now().Before(deadline) {
		<-ticker.C
		_, err := h.db.Pool.Exec(t.Context(), "INSERT INTO items (id, name, n) SELECT i, 'steady', i FROM generate_series($1::bigint, $2::bigint) i", next, next+perTick-1)
		require.NoError(t, err)
		next += perTick
	}
	written := int(next - 1)
	end := time.Now().Add(waitFor)
	for {
		mu.Lock()
		n := len(lags)
		mu.Unlock()
		if n >= written {
			break
		}
		require.True(t, time.Now().Before(end), "only %d of %d rows delivered", n, written)
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	require.NoError(t, <-done)
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lags)
	q := func(p float64) time.Duration { return lags[int(float64(len(lags)-1)*p)].Round(time.Millisecond) }
	t.Logf("lag at %d rows/s for %v, Interval %v: %d rows, p50 %v, p95 %v, p99 %v, max %v",
		perTick*int(time.Second/tick), run, interval, len(lags), q(0.5), q(0.95), q(0.99), lags[len(lags)-1].Round(time.Millisecond))
}
