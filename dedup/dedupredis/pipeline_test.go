package dedupredis_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dedup/dedupredis"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/testenv"
	"github.com/duplexsync/duplex/memdb"
)

var customers = duplex.Table{Schema: "public", Name: "customers"}

func newDB(t testing.TB, name string) *memdb.DB {
	t.Helper()
	db := memdb.New(name)
	require.NoError(t, db.CreateTable(customers, memdb.TableOptions{Key: []string{"id"}, Columns: []string{"id", "name", "n"}}))
	return db
}

// writeChanges makes n user changes on db, one per transaction: inserts,
// updates (always changing n, so none is a no-op) and deletes over keys
// keys.
func writeChanges(t testing.TB, db *memdb.DB, n, keys int) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		id := int64(rnd.IntN(keys))
		k := duplex.Key{{Name: "id", Value: id}}
		row := db.Get(customers, k)
		var err error
		switch {
		case row == nil:
			err = db.Insert(customers, duplex.Values{"id": id, "name": fmt.Sprint("c", id), "n": int64(i)})
		case rnd.IntN(10) == 0:
			err = db.Delete(customers, k)
		default:
			err = db.Update(customers, k, duplex.Values{"n": int64(i), "name": fmt.Sprint("c", id, "v", i)})
		}
		require.NoError(t, err)
	}
	require.Len(t, db.Changes(), n)
}

// countingApplier forwards to a memdb Applier (so it is a Ledger and a
// Checkpointer like a PostgreSQL target) and counts the committed writes of
// each change. Every failEvery-th Apply fails before writing anything, and
// every lostEvery-th commits but reports a lost connection, as a COMMIT
// whose answer never arrived.
type countingApplier struct {
	inner     *memdb.Applier
	failEvery int
	lostEvery int

	mu     sync.Mutex
	calls  int
	writes map[string]int
}

var (
	_ duplex.Applier      = (*countingApplier)(nil)
	_ duplex.Ledger       = (*countingApplier)(nil)
	_ duplex.Checkpointer = (*countingApplier)(nil)
)

func newCountingApplier(inner *memdb.Applier) *countingApplier {
	return &countingApplier{inner: inner, writes: make(map[string]int)}
}

func (a *countingApplier) Lookup(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	return a.inner.Lookup(ctx, t, keys)
}

func (a *countingApplier) Apply(ctx context.Context, b *duplex.Batch) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.failEvery > 0 && a.calls%a.failEvery == 0 {
		return duplex.Unavailable(errors.New("injected: connection refused"))
	}
	if err := a.inner.Apply(ctx, b); err != nil {
		return err
	}
	for _, w := range b.Writes {
		a.writes[w.Change.ID]++
	}
	if a.lostEvery > 0 && a.calls%a.lostEvery == 0 {
		return duplex.Unavailable(errors.New("injected: connection lost during COMMIT"))
	}
	return nil
}

func (a *countingApplier) Applied(ctx context.Context, ids []string) ([]bool, error) {
	return a.inner.Applied(ctx, ids)
}

func (a *countingApplier) Checkpoint(ctx context.Context, source string) (duplex.Position, error) {
	return a.inner.Checkpoint(ctx, source)
}

func (a *countingApplier) counts() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.writes)
}

// hookSource wraps a source: it calls hook before delivering batch n
// (from 1), and after every replayEvery-th batch delivers it a second time,
// as a source does after reconnecting. With fromStart it ignores the
// position the Pipeline resumes from (a slot recreated: everything again).
type hookSource struct {
	inner       duplex.ChangeSource
	hook        func(n int)
	replayEvery int
	fromStart   bool
	// beforeReplay, when set, runs before batch n is delivered again
	// (to wait until the Pipeline marked it).
	beforeReplay func(n int, b []duplex.Change)
}

func (s *hookSource) Stream(ctx context.Context, from duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	if s.fromStart {
		from = ""
	}
	n := 0
	return s.inner.Stream(ctx, from, func(ctx context.Context, b []duplex.Change) error {
		n++
		if s.hook != nil {
			s.hook(n)
		}
		again := slices.Clone(b)
		if err := fn(ctx, b); err != nil {
			return err
		}
		if s.replayEvery > 0 && n%s.replayEvery == 0 {
			if s.beforeReplay != nil {
				s.beforeReplay(n, again)
			}
			return fn(ctx, again)
		}
		return nil
	})
}

func (s *hookSource) Ack(ctx context.Context, p duplex.Position) error { return s.inner.Ack(ctx, p) }

// countingDeduper counts what a Deduper answered and how often it failed.
type countingDeduper struct {
	d                       duplex.Deduper
	hits, seenErrs, markErr atomic.Int64
	marked                  sync.Map // change ID -> struct{}: marked in Redis
}

// waitMarked waits, up to a few seconds, until every change of b was marked.
func (c *countingDeduper) waitMarked(b []duplex.Change) {
	deadline := time.Now().Add(5 * time.Second)
	for _, ch := range b {
		for {
			if _, ok := c.marked.Load(ch.ID); ok || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func (c *countingDeduper) Seen(ctx context.Context, ids []string) ([]bool, error) {
	got, err := c.d.Seen(ctx, ids)
	if err != nil {
		if !duplex.IsUnavailable(err) {
			panic(fmt.Sprintf("Seen error not classified unavailable: %v", err))
		}
		c.seenErrs.Add(1)
		return got, err
	}
	for _, ok := range got {
		if ok {
			c.hits.Add(1)
		}
	}
	return got, nil
}

func (c *countingDeduper) Mark(ctx context.Context, ids []string) error {
	err := c.d.Mark(ctx, ids)
	if err != nil {
		if !duplex.IsUnavailable(err) {
			panic(fmt.Sprintf("Mark error not classified unavailable: %v", err))
		}
		c.markErr.Add(1)
		return err
	}
	for _, id := range ids {
		c.marked.Store(id, struct{}{})
	}
	return nil
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestPipelineRedisStoppedMidRun: Redis, the Pipeline's Deduper, dies part
// way through a stream of 5,000 changes and comes back empty later. The
// applier also fails now and then, before and after committing, and the
// source redelivers batches. In the end the target equals the source and
// every change was written exactly once; a full replay afterwards writes
// nothing, answered partly by Redis and for the rest by the target's ledger.
func TestPipelineRedisStoppedMidRun(t *testing.T) {
	t.Parallel()
	const changes, keys, batch = 5000, 400, 100
	srv := startServer(t)
	rdb := fastClient(t, srv.addr())
	rd, err := dedupredis.New(rdb, dedupredis.Config{Prefix: "duplex:outage:b:", TTL: time.Hour})
	require.NoError(t, err)
	dd := &countingDeduper{d: rd}

	src, dst := newDB(t, "a"), newDB(t, "b")
	writeChanges(t, src, changes, keys)
	target := newCountingApplier(dst.Applier("duplex"))
	target.failEvery, target.lostEvery = 7, 11
	dead := dlq.NewMemory(dlq.MemoryConfig{})

	run := func(s duplex.ChangeSource) {
		t.Helper()
		p, err := duplex.NewPipeline(&duplex.Config{
			Name:        "outage",
			Direction:   duplex.Direction{From: "a", To: "b"},
			Source:      s,
			Target:      target,
			Deduper:     dd,
			DeadLetters: dead,
			Logger:      testLogger(t),
			Options:     duplex.Options{BatchSize: 128, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		require.NoError(t, p.Run(ctx))
	}

	// Redis goes down before the 10th batch and comes back before the 30th
	// (of 50). A batch delivered again before the outage waits until the
	// Pipeline marked it, so that Redis answers for it (delivered at once,
	// it may meet its first delivery in one intake, or arrive before the
	// mark: then the target's ledger answers, and Redis is never asked a
	// question it knows).
	run(&hookSource{
		inner:       src.Source(memdb.SourceConfig{Slot: "run1", BatchSize: batch, StopWhenIdle: true}),
		replayEvery: 4,
		beforeReplay: func(n int, b []duplex.Change) {
			if n < 10 {
				dd.waitMarked(b)
			}
		},
		hook: func(n int) {
			switch n {
			case 10:
				srv.kill()
			case 30:
				if err := srv.run(); err != nil {
					t.Error(err)
				}
			}
		},
	})
	require.Equal(t, src.Rows(customers), dst.Rows(customers), "target differs from source")
	require.NoError(t, ping(srv.addr()), "redis-server is back")
	// go-redis re-dials a server that refused it in the background, about
	// once a second: wait until the client itself works again.
	require.Eventually(t, func() bool { return rdb.Ping(t.Context()).Err() == nil }, 15*time.Second, 20*time.Millisecond)
	entries, total, err := dead.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Zero(t, total, "dead letters: %v", entries)
	writes := target.counts()
	require.Len(t, writes, changes, "changes written")
	for _, c := range src.Changes() {
		require.Equal(t, 1, writes[c.ID], "writes of change %s", c.ID)
	}
	// The Pipeline leaves a failing Deduper alone for a backoff period, so
	// the outage may be noticed by Seen, by Mark, or both.
	require.Positive(t, dd.seenErrs.Load()+dd.markErr.Load(), "the outage was not noticed")
	require.Positive(t, dd.hits.Load(), "redelivered batches were never answered by Redis")
	t.Logf("run 1: Seen errors %d, Mark errors %d, Redis hits %d", dd.seenErrs.Load(), dd.markErr.Load(), dd.hits.Load())

	// Replay everything with Redis up: Redis knows the changes marked after
	// it came back; the ledger answers for the rest. Nothing is written.
	dd.hits.Store(0)
	target.failEvery, target.lostEvery = 0, 0
	run(&hookSource{inner: src.Source(memdb.SourceConfig{Slot: "run2", BatchSize: batch, StopWhenIdle: true}), fromStart: true})
	require.Equal(t, writes, target.counts(), "the replay wrote again")
	hits := dd.hits.Load()
	t.Logf("replay: Redis hits %d of %d", hits, changes)
	// Redis answers only for what was marked after the client reconnected,
	// which may be nothing in a run this short; never for what was settled
	// while it was down.
	require.Less(t, hits, int64(changes), "Redis cannot know the changes settled while it was down")
	require.Equal(t, src.Rows(customers), dst.Rows(customers))

	// After the replay Redis knows every change: the ledger's answers were
	// marked in Redis too.
	dd.hits.Store(0)
	run(&hookSource{inner: src.Source(memdb.SourceConfig{Slot: "run3", BatchSize: batch, StopWhenIdle: true}), fromStart: true})
	require.EqualValues(t, changes, dd.hits.Load())
}

var benchRuns atomic.Int64

// BenchmarkPipeline runs a Pipeline over 100,000 changes (inserts, updates
// and deletes over 10,000 keys) from one memdb to another, once with the
// default in-memory Deduper and once with a Redis one on the local server,
// alternating in every iteration so that both see the same machine load.
// It reports the ns/change of each and their ratio (redis/memory).
func BenchmarkPipeline(b *testing.B) {
	const changes, keys = 100_000, 10_000
	src := newDB(b, "a")
	writeChanges(b, src, changes, keys)
	want := len(src.Rows(customers))
	env := testenv.Redis(b)
	runOnce := func(redisDedup bool) time.Duration {
		run := benchRuns.Add(1) // unique: the function may be called more than once
		var dd duplex.Deduper
		if redisDedup {
			d, err := dedupredis.New(env.Client, dedupredis.Config{Prefix: fmt.Sprintf("%srun%d:", env.Prefix, run), TTL: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			dd = d
		}
		dst := newDB(b, "b")
		p, err := duplex.NewPipeline(&duplex.Config{
			Name:        "bench",
			Direction:   duplex.Direction{From: "a", To: "b"},
			Source:      src.Source(memdb.SourceConfig{Slot: fmt.Sprint("run", run), BatchSize: 512, StopWhenIdle: true}),
			Target:      dst.Applier("duplex"),
			Deduper:     dd,
			DeadLetters: dlq.NewMemory(dlq.MemoryConfig{}),
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := p.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		if got := len(dst.Rows(customers)); got != want {
			b.Fatalf("target has %d rows, source %d", got, want)
		}
		return elapsed
	}
	var mem, red time.Duration
	runs := 0
	for b.Loop() {
		mem += runOnce(false)
		red += runOnce(true)
		runs++
	}
	n := float64(runs * changes)
	b.ReportMetric(float64(mem.Nanoseconds())/n, "memory-ns/change")
	b.ReportMetric(float64(red.Nanoseconds())/n, "redis-ns/change")
	b.ReportMetric(float64(red)/float64(mem), "redis/memory")
}
