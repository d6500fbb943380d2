package dedup_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dedup"
	"github.com/duplexsync/duplex/dedup/deduptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sharedMemories hands out one Memory per namespace, so two NewFunc calls
// with the same namespace share state as the suite requires.
func sharedMemories(cfg dedup.MemoryConfig) deduptest.NewFunc {
	var mu sync.Mutex
	byNS := map[string]*dedup.Memory{}
	return func(t *testing.T, ns string) duplex.Deduper {
		mu.Lock()
		defer mu.Unlock()
		m, ok := byNS[ns]
		if !ok {
			m = dedup.NewMemory(cfg)
			byNS[ns] = m
		}
		return m
	}
}

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	deduptest.Run(t, deduptest.Features{}, sharedMemories(dedup.MemoryConfig{}))
}

func TestMemoryConformanceWithTTL(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second // long enough for every subtest under -race on a busy machine
	deduptest.Run(t, deduptest.Features{Expires: true, TTL: ttl}, sharedMemories(dedup.MemoryConfig{TTL: ttl}))
}

// clock is a manual clock for TTL tests.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// names returns n ids: prefix0, prefix1, ...
func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

func seen(t *testing.T, m *dedup.Memory, ids ...string) []bool {
	t.Helper()
	got, err := m.Seen(t.Context(), ids)
	require.NoError(t, err)
	return got
}

func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	m := dedup.NewMemory(dedup.MemoryConfig{Capacity: 3})
	require.NoError(t, m.Mark(t.Context(), []string{"a", "b", "c"}))
	require.Equal(t, []bool{true}, seen(t, m, "a")) // a is now the most recently used; b the least
	require.NoError(t, m.Mark(t.Context(), []string{"d"}))
	require.Equal(t, []bool{true, false, true, true}, seen(t, m, "a", "b", "c", "d"))
	require.Equal(t, 3, m.Len())

	// Re-marking refreshes too: order is now (old to new) a c d -> mark a -> c d a.
	require.NoError(t, m.Mark(t.Context(), []string{"a"}))
	require.NoError(t, m.Mark(t.Context(), []string{"e"}))
	require.Equal(t, []bool{true, false, true, true}, seen(t, m, "a", "c", "d", "e"))

	// A miss does not count as a use.
	require.Equal(t, []bool{false}, seen(t, m, "zz"))
	require.Equal(t, 3, m.Len())
}

func TestMemoryCapacityBoundsLargeBatch(t *testing.T) {
	t.Parallel()
	m := dedup.NewMemory(dedup.MemoryConfig{Capacity: 100})
	ids := names("x", 1000)
	require.NoError(t, m.Mark(t.Context(), ids))
	require.Equal(t, 100, m.Len())
	got := seen(t, m, ids...)
	for i, ok := range got {
		require.Equal(t, i >= 900, ok, "id %d: only the last 100 marked remain", i)
	}
	// Slots are reused: the list and map stay consistent through churn.
	for round := range 20 {
		require.NoError(t, m.Mark(t.Context(), names("r"+strconv.Itoa(round)+"_", 37)))
		require.LessOrEqual(t, m.Len(), 100)
	}
	require.Equal(t, 100, m.Len())
}

func TestMemoryDefaultCapacity(t *testing.T) {
	t.Parallel()
	m := dedup.NewMemory(dedup.MemoryConfig{})
	ids := names("id", dedup.DefaultCapacity+10)
	require.NoError(t, m.Mark(t.Context(), ids))
	require.Equal(t, dedup.DefaultCapacity, m.Len())
	require.Equal(t, []bool{false, true}, seen(t, m, ids[9], ids[10]))
}

func TestMemoryTTL(t *testing.T) {
	t.Parallel()
	clk := newClock()
	m := dedup.NewMemory(dedup.MemoryConfig{TTL: time.Minute, Now: clk.Now})
	require.NoError(t, m.Mark(t.Context(), []string{"a", "b"}))
	clk.Advance(40 * time.Second)
	require.NoError(t, m.Mark(t.Context(), []string{"b"})) // restarts b's TTL
	clk.Advance(19 * time.Second)
	require.Equal(t, []bool{true, true}, seen(t, m, "a", "b"), "59s after the mark")

	clk.Advance(1 * time.Second)
	require.Equal(t, []bool{false, true}, seen(t, m, "a", "b"), "a expires at exactly one minute")
	require.Equal(t, 1, m.Len(), "an expired id found by Seen is dropped")

	// Seen does not extend the TTL.
	for range 5 {
		clk.Advance(8 * time.Second)
		seen(t, m, "b")
	}
	require.Equal(t, []bool{false}, seen(t, m, "b"), "Seen kept b alive")

	// Marking again after expiry works.
	require.NoError(t, m.Mark(t.Context(), []string{"a"}))
	require.Equal(t, []bool{true}, seen(t, m, "a"))
}

func TestMemoryExpiredMakeRoomFirst(t *testing.T) {
	t.Parallel()
	clk := newClock()
	m := dedup.NewMemory(dedup.MemoryConfig{Capacity: 3, TTL: time.Minute, Now: clk.Now})
	require.NoError(t, m.Mark(t.Context(), []string{"old1", "old2"}))
	clk.Advance(2 * time.Minute)
	require.NoError(t, m.Mark(t.Context(), []string{"new1"}))
	require.Equal(t, 1, m.Len(), "expired ids at the cold end are dropped when marking")
	require.NoError(t, m.Mark(t.Context(), []string{"new2", "new3"}))
	require.Equal(t, []bool{true, true, true}, seen(t, m, "new1", "new2", "new3"))
}

func TestMemoryCanceledContext(t *testing.T) {
	t.Parallel()
	m := dedup.NewMemory(dedup.MemoryConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := m.Seen(ctx, []string{"a"})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, m.Mark(ctx, []string{"a"}), context.Canceled)
	require.Equal(t, 0, m.Len(), "a canceled Mark marks nothing")
}

func BenchmarkMemory(b *testing.B) {
	const batch = 512
	m := dedup.NewMemory(dedup.MemoryConfig{})
	// Ids are made up front; every other batch repeats the previous one so
	// that Seen has hits as well as misses, and the memory is kept full.
	pool := names("slot/0/16B3748#", 4*dedup.DefaultCapacity)
	ctx := context.Background()
	var i, n int
	for b.Loop() {
		start := (i / 2 * batch) % (len(pool) - batch)
		ids := pool[start : start+batch]
		if _, err := m.Seen(ctx, ids); err != nil {
			b.Fatal(err)
		}
		if err := m.Mark(ctx, ids); err != nil {
			b.Fatal(err)
		}
		i++
		n += batch
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/id")
}

func BenchmarkMemoryParallel(b *testing.B) {
	const batch = 512
	m := dedup.NewMemory(dedup.MemoryConfig{})
	pool := names("slot/0/16B3748#", 4*dedup.DefaultCapacity)
	var total atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		var i, n int
		for pb.Next() {
			start := (i / 2 * batch) % (len(pool) - batch)
			ids := pool[start : start+batch]
			if _, err := m.Seen(ctx, ids); err != nil {
				b.Error(err)
				return
			}
			if err := m.Mark(ctx, ids); err != nil {
				b.Error(err)
				return
			}
			i++
			n += batch
		}
		total.Add(int64(n))
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total.Load()), "ns/id")
}
