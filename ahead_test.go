package duplex_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// gatedApplier holds the Apply of the batch that writes key hold until a
// Lookup asks for key next (or a timeout), and reports whether it did.
type gatedApplier struct {
	*faultyApplier
	hold, next int64

	once      sync.Once
	asked     chan struct{}
	overlap   atomic.Bool // Lookup of next came while the held Apply waited
	committed atomic.Bool // the held Apply returned
}

func (g *gatedApplier) Lookup(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	for _, k := range keys {
		if k[0].Value == g.next {
			g.once.Do(func() { close(g.asked) })
		}
	}
	return g.faultyApplier.Lookup(ctx, t, keys)
}

func (g *gatedApplier) Apply(ctx context.Context, b *duplex.Batch) error {
	holds := false
	for _, w := range b.Writes {
		holds = holds || w.Key[0].Value == g.hold
	}
	if !holds {
		return g.faultyApplier.Apply(ctx, b)
	}
	select {
	case <-g.asked:
		g.overlap.Store(true)
	case <-time.After(5 * time.Second):
	}
	defer g.committed.Store(true)
	return g.faultyApplier.Apply(ctx, b)
}

// TestPipelinePlansTheNextChunkWhileOneCommits: while the target commits
// one chunk, the Pipeline reads the rows of the next (Lookup), and
// acknowledges nothing from the committing chunk's first change on until
// that commit returned; every change is applied once, in order.
func TestPipelinePlansTheNextChunkWhileOneCommits(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	tb.options.BatchSize = 50
	seed(t, tb.a, 100)
	require.NoError(t, tb.a.Update(customers, key(20), duplex.Values{"name": "twenty"}))
	g := &gatedApplier{faultyApplier: tb.target, hold: 1, next: 60, asked: make(chan struct{})}
	first := tb.a.Changes()[0].Position
	tb.src.onAck = func(p duplex.Position, _ []duplex.Change) {
		if !g.committed.Load() && p >= first {
			t.Errorf("acknowledged %s while the chunk from %s was committing", p, first)
		}
	}
	p, err := duplex.NewPipeline(&duplex.Config{
		Name: "test", Direction: duplex.Direction{From: "a", To: "b"},
		Source: tb.src, Target: g, DeadLetters: tb.dlq, Observer: tb.events, Logger: testLogger(t), Options: tb.options,
	})
	require.NoError(t, err)
	runUntilDone(t, p)

	require.True(t, g.overlap.Load(), "the next chunk's rows were not read while the first chunk committed")
	requireSameRows(t, tb.a, tb.b)
	require.Equal(t, "twenty", tb.b.Get(customers, key(20))["name"])
	require.Empty(t, tb.dlq.all())
	for id, n := range tb.target.appliedIDs() {
		require.Equal(t, 1, n, "writes of change %s", id)
	}
	require.Len(t, tb.target.appliedIDs(), 101)
}

// TestPipelineChunkInFlightFailsAndTheNextWaits: the chunk in flight fails
// (its key parked for a retry) while the next, planned meanwhile, touches
// other keys: the next commits after it, and the failing key's later change
// still waits behind it.
func TestPipelineChunkInFlightFailsAndTheNextWaits(t *testing.T) {
	t.Parallel()
	a, b := newDB(t, "a", false), newDB(t, "b", true)
	src := &recordingSource{next: a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true, BatchSize: 10})}
	target := newFaulty(b.Applier("duplex"))
	seed(t, a, 30)
	require.NoError(t, a.Update(customers, key(3), duplex.Values{"name": "three-later"}))
	var fails atomic.Int32
	target.setFail(func(_ int, bt *duplex.Batch) error {
		for i, w := range bt.Writes {
			if w.Key[0].Value == int64(3) && w.Change.Op == duplex.OpInsert && fails.Add(1) <= 2 {
				return &duplex.BatchError{Index: i, Err: duplex.Transient(context.DeadlineExceeded)}
			}
		}
		return nil
	})
	opts := fastOptions()
	opts.BatchSize = 10
	opts.MinBackoff, opts.MaxBackoff = 20*time.Millisecond, 20*time.Millisecond
	dead := &deadLetters{}
	p, err := duplex.NewPipeline(&duplex.Config{
		Name: "test", Direction: duplex.Direction{From: "a", To: "b"},
		Source: src, Target: target, DeadLetters: dead, Logger: testLogger(t), Options: opts,
	})
	require.NoError(t, err)
	runUntilDone(t, p)

	requireSameRows(t, a, b)
	require.Equal(t, "three-later", b.Get(customers, key(3))["name"])
	require.Empty(t, dead.all())
	order := target.order
	require.Greater(t, indexOf(order, a.Changes()[30].ID), indexOf(order, a.Changes()[2].ID), "key 3's later change waited for its insert")
	for id, n := range target.appliedIDs() {
		require.Equal(t, 1, n, "writes of change %s", id)
	}
}
