package dedupredis_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dedup/dedupredis"
	"github.com/duplexsync/duplex/dedup/deduptest"
	"github.com/duplexsync/duplex/internal/testenv"
)

// conformanceTTL is the TTL of the conformance run that checks expiry. The
// suite gives every subtest the same NewFunc, so marks in the subtests that
// are not about expiry must outlive them too: ConcurrentMark takes up to
// 0.6s under -race on a busy machine, and failed with a TTL of 300ms.
const conformanceTTL = 2 * time.Second

func TestConformance(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t) // its cleanup deletes every key under env.Prefix
	deduptest.Run(t, deduptest.Features{Persistent: true, Expires: true, TTL: conformanceTTL},
		func(t *testing.T, ns string) duplex.Deduper {
			d, err := dedupredis.New(env.Client, dedupredis.Config{Prefix: env.Prefix + ns + ":", TTL: conformanceTTL})
			require.NoError(t, err)
			return d
		})
}

// TestConformanceRing runs the suite on a sharded client (a Ring, here of
// one shard), where Seen pipelines EXISTS instead of sending one MGET, with
// the default TTL.
func TestConformanceRing(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	opt, err := redis.ParseURL(env.URL)
	require.NoError(t, err)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"shard1": opt.Addr}, DB: opt.DB})
	t.Cleanup(func() { _ = ring.Close() })
	deduptest.Run(t, deduptest.Features{Persistent: true}, func(t *testing.T, ns string) duplex.Deduper {
		d, err := dedupredis.New(ring, dedupredis.Config{Prefix: env.Prefix + ns + ":"})
		require.NoError(t, err)
		return d
	})
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	_, err := dedupredis.New(nil, dedupredis.Config{TTL: -time.Second})
	require.True(t, duplex.IsPermanent(err))
	for _, field := range []string{"client", "Config.Prefix", "Config.TTL"} {
		require.ErrorContains(t, err, field)
	}
	env := testenv.Redis(t)
	_, err = dedupredis.New(env.Client, dedupredis.Config{Prefix: "p:", TTL: time.Microsecond})
	require.ErrorContains(t, err, "at least 1ms")
}

// TestKeysAndTTL pins down the layout in Redis: one key per id under the
// prefix, whose TTL Mark restarts and Seen leaves alone.
func TestKeysAndTTL(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := t.Context()
	rdb := env.Client
	d, err := dedupredis.New(rdb, dedupredis.Config{Prefix: env.Prefix + "s:b:", TTL: time.Hour})
	require.NoError(t, err)

	require.NoError(t, d.Mark(ctx, []string{"a/1", "a/2"}))
	keys, err := rdb.Keys(ctx, env.Prefix+"*").Result()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{env.Prefix + "s:b:a/1", env.Prefix + "s:b:a/2"}, keys)
	ttl, err := rdb.PTTL(ctx, env.Prefix+"s:b:a/1").Result()
	require.NoError(t, err)
	require.InDelta(t, time.Hour, ttl, float64(time.Minute))

	// Seen does not extend the TTL; Mark restarts it.
	require.NoError(t, rdb.PExpire(ctx, env.Prefix+"s:b:a/1", time.Minute).Err())
	_, err = d.Seen(ctx, []string{"a/1"})
	require.NoError(t, err)
	ttl, err = rdb.PTTL(ctx, env.Prefix+"s:b:a/1").Result()
	require.NoError(t, err)
	require.LessOrEqual(t, ttl, time.Minute)
	require.NoError(t, d.Mark(ctx, []string{"a/1"}))
	ttl, err = rdb.PTTL(ctx, env.Prefix+"s:b:a/1").Result()
	require.NoError(t, err)
	require.Greater(t, ttl, 59*time.Minute)

	// The default TTL is a week.
	dflt, err := dedupredis.New(rdb, dedupredis.Config{Prefix: env.Prefix + "dflt:"})
	require.NoError(t, err)
	require.NoError(t, dflt.Mark(ctx, []string{"x"}))
	ttl, err = rdb.PTTL(ctx, env.Prefix+"dflt:x").Result()
	require.NoError(t, err)
	require.InDelta(t, dedupredis.DefaultTTL, ttl, float64(time.Minute))
}

// TestOutage stops a private Redis under a Deduper: Seen and Mark fail
// quickly with errors classified duplex.Unavailable, Seen gives no answers,
// nothing panics, and once Redis is back both work again. The restarted
// Redis has lost its marks (no persistence): that is what the target's
// ledger is for.
func TestOutage(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	rdb := fastClient(t, srv.addr())
	d, err := dedupredis.New(rdb, dedupredis.Config{Prefix: "duplex:s:b:", TTL: time.Hour})
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, d.Mark(ctx, []string{"before"}))
	require.Equal(t, []bool{true, false}, seen(t, d, "before", "x"))

	srv.stop(t)
	for i := range 20 { // past the pool size, so the client's dial breaker trips too
		start := time.Now()
		got, err := d.Seen(ctx, []string{"before", "x"})
		require.Nil(t, got)
		require.True(t, duplex.IsUnavailable(err), "Seen: %v", err)
		require.ErrorContains(t, err, "dedupredis: seen")
		err = d.Mark(ctx, []string{"during" + strconv.Itoa(i)})
		require.True(t, duplex.IsUnavailable(err), "Mark: %v", err)
		require.ErrorContains(t, err, "dedupredis: mark")
		require.Less(t, time.Since(start), 2*time.Second, "call %d", i)
	}

	// Concurrent callers during the outage: errors, no panics, no races.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				if _, err := d.Seen(ctx, []string{"a", "b"}); !duplex.IsUnavailable(err) {
					t.Errorf("Seen: %v", err)
				}
				if err := d.Mark(ctx, []string{"a"}); !duplex.IsUnavailable(err) {
					t.Errorf("Mark: %v", err)
				}
			}
		})
	}
	wg.Wait()

	srv.start(t)
	require.Eventually(t, func() bool {
		_, err := d.Seen(ctx, []string{"x"})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "Seen does not recover after Redis restarted")
	require.Equal(t, []bool{false, false}, seen(t, d, "before", "during0"), "a restarted Redis without persistence forgets")
	require.NoError(t, d.Mark(ctx, []string{"after"}))
	require.Equal(t, []bool{true}, seen(t, d, "after"))
}

// TestHungServer: a server that accepts connections but never answers (a
// stalled or partitioned Redis) makes calls fail with the client's read
// timeout, classified duplex.Unavailable.
func TestHungServer(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	d, err := dedupredis.New(fastClient(t, l.Addr().String()), dedupredis.Config{Prefix: "p:"})
	require.NoError(t, err)
	start := time.Now()
	_, err = d.Seen(t.Context(), []string{"x"})
	require.True(t, duplex.IsUnavailable(err), "Seen: %v", err)
	err = d.Mark(t.Context(), []string{"x"})
	require.True(t, duplex.IsUnavailable(err), "Mark: %v", err)
	require.Less(t, time.Since(start), 5*time.Second)

	// A caller's deadline shorter than the client's timeouts wins, with
	// ContextTimeoutEnabled.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = d.Seen(ctx, []string{"x"})
	require.Error(t, err)
	require.True(t, duplex.IsUnavailable(err), "Seen: %v", err)
	require.Less(t, time.Since(start), time.Second)
}

func seen(t *testing.T, d duplex.Deduper, ids ...string) []bool {
	t.Helper()
	got, err := d.Seen(t.Context(), ids)
	require.NoError(t, err)
	require.Len(t, got, len(ids))
	return got
}

// BenchmarkSeenMark measures one Seen and one Mark of a batch of 512 ids,
// half of them marked before (every other batch repeats the previous one),
// against the local Redis.
func BenchmarkSeenMark(b *testing.B) {
	const batch = 512
	env := testenv.Redis(b)
	d, err := dedupredis.New(env.Client, dedupredis.Config{Prefix: env.Prefix, TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	id := make([]string, batch)
	var i, n int
	for b.Loop() {
		start := i / 2 * batch
		for j := range id {
			id[j] = "slot/0/16B3748#" + strconv.Itoa(start+j)
		}
		if _, err := d.Seen(ctx, id); err != nil {
			b.Fatal(err)
		}
		if err := d.Mark(ctx, id); err != nil {
			b.Fatal(err)
		}
		i++
		n += batch
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/id")
}
