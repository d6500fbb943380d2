package cdctest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

const (
	// waitTimeout is how long the suite waits for changes to arrive.
	waitTimeout = 30 * time.Second
	// largeTimeout is how long LargeBatchBounded waits for its changes.
	largeTimeout = 3 * time.Minute
	// stopTimeout is how long Stream may take to return after its context
	// is canceled.
	stopTimeout = 5 * time.Second
)

// bundle is what every subtest works with.
type bundle struct {
	h     Harness
	f     Features
	table duplex.Table
	cmp   func(a, b duplex.Position) int // nil when positions cannot be ordered
}

func setup(t *testing.T, f Features, newFunc NewFunc) *bundle {
	t.Helper()
	h := newFunc(t)
	require.NotNil(t, h, "NewFunc returned a nil Harness")
	b := &bundle{h: h, f: f, table: h.Table()}
	if pc, ok := h.(PositionComparer); ok {
		b.cmp = pc.ComparePositions
	}
	return b
}

// stream runs one Stream of a source in a goroutine and collects the changes
// of the Harness's table that it delivers.
type stream struct {
	t       *testing.T
	table   duplex.Table
	cmp     func(a, b duplex.Position) int
	src     duplex.ChangeSource
	cancel  context.CancelFunc
	batches chan delivery
	done    chan struct{}
	err     error // Stream's result, set before done is closed

	inFn       atomic.Int32
	concurrent atomic.Bool // fn was called while another call was running
	nilCtx     atomic.Bool // fn was called with a nil context

	got      []duplex.Change   // changes of the table, in delivery order
	others   []duplex.Change   // changes of other tables, ignored
	received [][]duplex.Change // every batch as delivered
	snaps    [][]duplex.Change // deep copies of received, taken on delivery
	maxBatch int
	stopped  bool
}

// start starts Stream(ctx, from, fn) on src; the stream is stopped, and
// checked, when the test ends if it was not stopped before.
func (b *bundle) start(t *testing.T, src duplex.ChangeSource, from duplex.Position) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	s := &stream{
		t:       t,
		table:   b.table,
		cmp:     b.cmp,
		src:     src,
		cancel:  cancel,
		batches: make(chan delivery, 64),
		done:    make(chan struct{}),
	}
	fn := func(ctx context.Context, batch []duplex.Change) error {
		if s.inFn.Add(1) != 1 {
			s.concurrent.Store(true)
		}
		defer s.inFn.Add(-1)
		if ctx == nil {
			s.nilCtx.Store(true)
			ctx = context.Background()
		}
		// The snapshot is taken before fn returns: from then on the batch
		// belongs to the caller and the source must not touch it.
		d := delivery{batch: batch, snap: make([]duplex.Change, len(batch))}
		for i := range batch {
			d.snap[i] = cloneChange(batch[i])
		}
		select {
		case s.batches <- d:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	go func() {
		defer close(s.done)
		s.err = src.Stream(ctx, from, fn)
	}()
	t.Cleanup(func() {
		if !s.stopped {
			s.stop()
		}
	})
	return s
}

// delivery is one batch fn received, with a deep copy taken in fn.
type delivery struct {
	batch []duplex.Change
	snap  []duplex.Change
}

// add records a delivered batch.
func (s *stream) add(d delivery) {
	batch := d.batch
	s.received = append(s.received, batch)
	s.snaps = append(s.snaps, d.snap)
	s.maxBatch = max(s.maxBatch, len(batch))
	for _, c := range batch {
		if c.Table != s.table {
			s.others = append(s.others, c)
			continue
		}
		s.got = append(s.got, c)
	}
}

// waitUntil collects changes until cond holds for everything collected so
// far, and returns that. It fails the test when timeout passes first or
// when Stream returns.
func (s *stream) waitUntil(timeout time.Duration, what string, cond func(got []duplex.Change) bool) []duplex.Change {
	s.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for !cond(s.got) {
		select {
		case b := <-s.batches:
			s.add(b)
		case <-s.done:
			s.drain()
			if cond(s.got) {
				return s.got
			}
			s.t.Fatalf("Stream returned %v while waiting for %s; got %d changes of %s:\n%s%s", s.err, what, len(s.got), s.table, describe(s.got), s.ignored())
		case <-timer.C:
			s.t.Fatalf("timed out after %v waiting for %s; got %d changes of %s:\n%s%s", timeout, what, len(s.got), s.table, describe(s.got), s.ignored())
		}
	}
	return s.got
}

// waitFor waits until at least n changes of the table arrived.
func (s *stream) waitFor(n int) []duplex.Change {
	s.t.Helper()
	return s.waitUntil(waitTimeout, fmt.Sprintf("%d changes", n), func(got []duplex.Change) bool { return len(got) >= n })
}

// ignored describes the changes of other tables, for failure messages.
func (s *stream) ignored() string {
	if len(s.others) == 0 {
		return ""
	}
	return fmt.Sprintf("and %d changes of other tables, ignored:\n%s", len(s.others), describe(s.others[:min(len(s.others), 5)]))
}

// drain collects the batches already sent.
func (s *stream) drain() {
	for {
		select {
		case b := <-s.batches:
			s.add(b)
		default:
			return
		}
	}
}

// stop cancels the stream's context and checks that Stream returns nil
// within stopTimeout and kept to the invariants of every stream. It returns
// every change collected.
func (s *stream) stop() []duplex.Change {
	s.t.Helper()
	s.stopped = true
	s.cancel()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-s.done:
	case <-timer.C:
		// Stream is stuck; the goroutine leaks, but the test says why.
		s.t.Fatalf("Stream did not return within %v of its context being canceled", stopTimeout)
	}
	s.drain()
	require.NoError(s.t, s.err, "Stream must return nil when its context is canceled")
	s.checkInvariants()
	return s.got
}

// checkInvariants checks what holds for every Stream: fn is never called
// concurrently nor with a nil context, every change is complete, and no
// batch was modified after delivery.
func (s *stream) checkInvariants() {
	s.t.Helper()
	require.False(s.t, s.concurrent.Load(), "Stream called fn concurrently")
	require.False(s.t, s.nilCtx.Load(), "Stream called fn with a nil context")
	for _, c := range s.got {
		require.NotEmpty(s.t, c.ID, "change without ID: %s", &c)
		require.NotEmpty(s.t, c.Source, "change without Source: %s", &c)
		require.NotEmpty(s.t, c.Position, "change without Position: %s", &c)
		require.False(s.t, c.CommitTime.IsZero(), "change without CommitTime: %s", &c)
	}
	for i, batch := range s.received {
		for j := range batch {
			if !reflect.DeepEqual(s.snaps[i][j], batch[j]) {
				s.t.Fatalf("change %d of batch %d was modified after fn returned:\nwas %s\nnow %s",
					j, i, describe(s.snaps[i][j:j+1]), describe(batch[j:j+1]))
			}
		}
	}
	requireOrdered(s.t, s.cmp, slices.Concat(s.received...))
}

// requireOrdered checks that the positions of changes delivered by one
// Stream never decrease: with cmp when positions can be ordered, else by
// checking that no position reappears after a different one.
func requireOrdered(t *testing.T, cmp func(a, b duplex.Position) int, got []duplex.Change) {
	t.Helper()
	if cmp != nil {
		for i := 1; i < len(got); i++ {
			if cmp(got[i-1].Position, got[i].Position) > 0 {
				t.Fatalf("position of change %d (%s at %s) is before the previous one (%s at %s)",
					i, &got[i], got[i].Position, &got[i-1], got[i-1].Position)
			}
		}
		return
	}
	left := make(map[duplex.Position]bool)
	for i := 1; i < len(got); i++ {
		if got[i].Position == got[i-1].Position {
			continue
		}
		left[got[i-1].Position] = true
		if left[got[i].Position] {
			t.Fatalf("position %s of change %d (%s) reappears after later positions", got[i].Position, i, &got[i])
		}
	}
}

// run runs Stream with fn in a goroutine and returns a channel that
// receives its result.
func run(ctx context.Context, src duplex.ChangeSource, from duplex.Position, fn func(context.Context, []duplex.Change) error) <-chan error {
	res := make(chan error, 1)
	go func() { res <- src.Stream(ctx, from, fn) }()
	return res
}

// await waits up to timeout for Stream's result.
func await(t *testing.T, res <-chan error, timeout time.Duration, what string) error {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-res:
		return err
	case <-timer.C:
		t.Fatalf("Stream did not return within %v %s", timeout, what)
		return nil
	}
}

func cloneChange(c duplex.Change) duplex.Change {
	c.Key = slices.Clone(c.Key)
	c.Before = c.Before.Clone()
	c.After = c.After.Clone()
	c.Unchanged = slices.Clone(c.Unchanged)
	return c
}

// describe renders changes for failure messages (at most 50 of them).
func describe(cs []duplex.Change) string {
	var out []byte
	for i, c := range cs {
		if i == 50 {
			out = fmt.Appendf(out, "  ... and %d more\n", len(cs)-i)
			break
		}
		out = fmt.Appendf(out, "  %s at %s after=%v before=%v origin=%q\n", &c, c.Position, c.After, c.Before, c.Origin)
	}
	return string(out)
}
