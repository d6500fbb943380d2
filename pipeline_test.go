package duplex_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

type bed struct {
	a, b    *memdb.DB
	src     *recordingSource
	target  *faultyApplier
	dlq     *deadLetters
	events  *eventLog
	options duplex.Options
}

func newBed(t *testing.T) *bed {
	a, b := newDB(t, "a", false), newDB(t, "b", true)
	return &bed{
		a: a, b: b,
		src:     &recordingSource{next: a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true, BatchSize: 50})},
		target:  newFaulty(b.Applier("duplex")),
		dlq:     &deadLetters{},
		events:  newEventLog(),
		options: fastOptions(),
	}
}

func (tb *bed) pipeline(t *testing.T, resolver duplex.Resolver) *duplex.Pipeline {
	t.Helper()
	p, err := duplex.NewPipeline(&duplex.Config{
		Name:        "test",
		Direction:   duplex.Direction{From: "a", To: "b"},
		Source:      tb.src,
		Target:      tb.target,
		Resolver:    resolver,
		DeadLetters: tb.dlq,
		Observer:    tb.events,
		Logger:      testLogger(t),
		Options:     tb.options,
	})
	require.NoError(t, err)
	return p
}

func seed(t *testing.T, db *memdb.DB, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		require.NoError(t, db.Insert(customers, duplex.Values{"id": int64(i), "name": fmt.Sprint("c", i), "n": int64(i)}))
	}
}

func TestPipelineAppliesInsertUpdateDelete(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	seed(t, tb.a, 10)
	require.NoError(t, tb.a.Update(customers, key(3), duplex.Values{"name": "three"}))
	require.NoError(t, tb.a.Delete(customers, key(5)))
	require.NoError(t, tb.a.Update(customers, key(7), duplex.Values{"note": nil}))

	runUntilDone(t, tb.pipeline(t, nil))

	requireSameRows(t, tb.a, tb.b)
	require.Equal(t, "three", tb.b.Get(customers, key(3))["name"])
	require.Nil(t, tb.b.Get(customers, key(5)))
	v, ok := tb.b.Get(customers, key(7))["note"]
	require.True(t, ok, "NULL must be written as a present nil")
	require.Nil(t, v)
	require.Empty(t, tb.dlq.all())
	require.Equal(t, tb.a.Changes()[len(tb.a.Changes())-1].Position, tb.src.lastAck())
}

func TestPipelineRetriesTransientErrorsThenApplies(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	seed(t, tb.a, 100)
	tb.target.setFail(func(call int, _ *duplex.Batch) error {
		if call <= 2 {
			return duplex.Transient(errors.New("deadlock detected"))
		}
		return nil
	})
	runUntilDone(t, tb.pipeline(t, nil))
	requireSameRows(t, tb.a, tb.b)
	require.Empty(t, tb.dlq.all())
	_, retried := tb.events.snapshot()
	require.GreaterOrEqual(t, retried, 2)
	for id, n := range tb.target.appliedIDs() {
		require.Equal(t, 1, n, "change %s applied %d times", id, n)
	}
}

func TestPipelineWaitsOutAnOutageWithoutDeadLettering(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	seed(t, tb.a, 20)
	// Far more failures than MaxAttempts: an outage must never dead-letter.
	tb.target.setFail(func(call int, _ *duplex.Batch) error {
		if call <= 3*tb.options.MaxAttempts {
			return duplex.Unavailable(errors.New("connection refused"))
		}
		return nil
	})
	runUntilDone(t, tb.pipeline(t, nil))
	requireSameRows(t, tb.a, tb.b)
	require.Empty(t, tb.dlq.all())
}

func TestPipelineDeadLettersOnlyThePoisonChange(t *testing.T) {
	t.Parallel()
	for _, hideIndex := range []bool{false, true} {
		t.Run(fmt.Sprintf("hideIndex=%v", hideIndex), func(t *testing.T) {
			t.Parallel()
			tb := newBed(t)
			if hideIndex { // force bisection: the applier does not say which write failed
				tb.target.next = hideBatchIndex{tb.target.next}
			}
			for i := 1; i <= 100; i++ {
				n := int64(i)
				if i == 42 {
					n = -1 // violates the target's CHECK constraint only
				}
				require.NoError(t, tb.a.Insert(customers, duplex.Values{"id": int64(i), "name": "x", "n": n}))
			}
			runUntilDone(t, tb.pipeline(t, nil))

			dl := tb.dlq.all()
			require.Len(t, dl, 1)
			require.Equal(t, duplex.ReasonPermanentError, dl[0].Reason)
			require.Equal(t, int64(42), dl[0].Change.Key[0].Value)
			require.Equal(t, int64(-1), dl[0].Change.After["n"], "the payload is kept")
			require.Contains(t, dl[0].Error, "n must be >= 0")
			require.Equal(t, 1, dl[0].Attempts)
			require.Len(t, tb.b.Rows(customers), 99)
			require.Nil(t, tb.b.Get(customers, key(42)))
			// Everything is settled, so the source is acknowledged to the end.
			require.Equal(t, tb.a.Changes()[99].Position, tb.src.lastAck())
		})
	}
}

type hideBatchIndex struct{ duplex.Applier }

func (h hideBatchIndex) Apply(ctx context.Context, b *duplex.Batch) error {
	err := h.Applier.Apply(ctx, b)
	var be *duplex.BatchError
	if errors.As(err, &be) {
		return duplex.Permanent(errors.New(be.Err.Error()))
	}
	return err
}

func TestPipelineParksAFailingKeyWhileOthersProceed(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	tb.options.MaxAttempts = 10
	tb.options.MinBackoff, tb.options.MaxBackoff = 20*time.Millisecond, 20*time.Millisecond
	seed(t, tb.a, 30)
	require.NoError(t, tb.a.Update(customers, key(7), duplex.Values{"name": "seven-later"}))
	var key7Fails atomic.Int32
	tb.target.setFail(func(_ int, b *duplex.Batch) error {
		for i, w := range b.Writes {
			if w.Key[0].Value == int64(7) && key7Fails.Add(1) <= 3 {
				return &duplex.BatchError{Index: i, Err: duplex.Transient(errors.New("lock timeout"))}
			}
		}
		return nil
	})
	// While key 7 is parked, the acknowledgement must stay before it.
	firstOf7 := tb.a.Changes()[6].Position
	tb.src.onAck = func(p duplex.Position, _ []duplex.Change) {
		if key7Fails.Load() < 4 && p >= firstOf7 {
			t.Errorf("acknowledged %s while key 7 (at %s) was unsettled", p, firstOf7)
		}
	}
	runUntilDone(t, tb.pipeline(t, nil))

	requireSameRows(t, tb.a, tb.b)
	require.Equal(t, "seven-later", tb.b.Get(customers, key(7))["name"], "the later change applied after the earlier one")
	require.Empty(t, tb.dlq.all())
	order := tb.target.order
	pos7 := indexOf(order, tb.a.Changes()[6].ID)
	require.Greater(t, pos7, indexOf(order, tb.a.Changes()[29].ID), "other keys were not held back by key 7")
	require.Greater(t, indexOf(order, tb.a.Changes()[30].ID), pos7, "per-key order kept")
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func TestPipelineDeadLettersWhenRetriesAreExhausted(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	seed(t, tb.a, 10)
	require.NoError(t, tb.a.Update(customers, key(4), duplex.Values{"name": "four"}))
	tb.target.setFail(func(_ int, b *duplex.Batch) error {
		for i, w := range b.Writes {
			if w.Op == duplex.OpInsert && w.Key[0].Value == int64(4) {
				return &duplex.BatchError{Index: i, Err: errors.New("mystery failure")} // unknown: retried, then DLQ
			}
		}
		return nil
	})
	runUntilDone(t, tb.pipeline(t, nil))

	dl := tb.dlq.all()
	require.Len(t, dl, 2, "the insert exhausted its retries; the update then met a missing row")
	require.Equal(t, duplex.ReasonRetriesExhausted, dl[0].Reason)
	require.Equal(t, tb.options.MaxAttempts, dl[0].Attempts)
	require.Contains(t, dl[0].Error, "mystery failure")
	require.Equal(t, duplex.ReasonConflict, dl[1].Reason)
	require.Equal(t, duplex.UpdateDelete, dl[1].Conflict.Kind)
	require.Len(t, tb.b.Rows(customers), 9)
}

func TestPipelineAppliesDuplicateDeliveriesOnce(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	tb.src.twice = true
	seed(t, tb.a, 50)
	for i := 1; i <= 50; i += 3 {
		require.NoError(t, tb.a.Update(customers, key(int64(i)), duplex.Values{"n": int64(1000 + i)}))
	}
	runUntilDone(t, tb.pipeline(t, nil))
	requireSameRows(t, tb.a, tb.b)
	for id, n := range tb.target.appliedIDs() {
		require.Equal(t, 1, n, "change %s applied %d times", id, n)
	}
	require.Len(t, tb.target.appliedIDs(), len(tb.a.Changes()))
	require.Empty(t, tb.dlq.all())
	require.Equal(t, len(tb.a.Changes()), tb.events.skipped[duplex.SkipDuplicate])
}

func TestPipelineCancelMidBatchThenResumeLosesNothing(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	tb.options.BatchSize = 10
	seed(t, tb.a, 200)
	for i := 1; i <= 200; i += 2 {
		require.NoError(t, tb.a.Update(customers, key(int64(i)), duplex.Values{"name": "upd"}))
	}
	ctx, cancel := context.WithCancel(t.Context())
	block := make(chan struct{})
	tb.target.setFail(func(call int, _ *duplex.Batch) error {
		if call == 7 {
			cancel()   // stop while this batch is in flight...
			<-block    // ...and hold it there for a moment
			return nil // then let it commit: an in-flight apply finishes
		}
		return nil
	})
	p := tb.pipeline(t, nil)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-ctx.Done()
	close(block)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	partial := len(tb.target.appliedIDs())
	require.Less(t, partial, len(tb.a.Changes()), "the first run must stop early")

	// Acks never passed what was applied.
	applied := tb.target.appliedIDs()
	for _, c := range tb.a.Changes() {
		if c.Position <= tb.src.lastAck() {
			require.Contains(t, applied, c.ID, "acknowledged %s before applying it", c.ID)
		}
	}

	// Resume with a fresh Pipeline on the same slot and target.
	tb.target.setFail(nil)
	tb.src = &recordingSource{next: tb.a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true, BatchSize: 50})}
	runUntilDone(t, tb.pipeline(t, nil))
	requireSameRows(t, tb.a, tb.b)
	require.Empty(t, tb.dlq.all())
	for id, n := range tb.target.appliedIDs() {
		require.Equal(t, 1, n, "change %s applied %d times across the restart", id, n)
	}
}

func TestPipelineAckNeverPassesAnUnsettledChange(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	tb.options.BatchSize = 7
	seed(t, tb.a, 120)
	var mu sync.Mutex
	settled := map[string]bool{}
	busy := map[int64]int{}
	tb.target.setFail(func(_ int, b *duplex.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		for i, w := range b.Writes {
			id := w.Key[0].Value.(int64)
			if id%11 == 0 {
				return &duplex.BatchError{Index: i, Err: duplex.Permanent(errors.New("rejected"))}
			}
			if id%13 == 0 && busy[id] < 2 {
				busy[id]++
				return &duplex.BatchError{Index: i, Err: duplex.Transient(errors.New("busy"))}
			}
		}
		for _, w := range b.Writes {
			settled[w.Change.ID] = true
		}
		return nil
	})
	tb.dlq.fail = func(l *duplex.DeadLetter) error {
		mu.Lock()
		settled[l.Change.ID] = true
		mu.Unlock()
		return nil
	}
	tb.src.onAck = func(p duplex.Position, delivered []duplex.Change) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range delivered {
			if c.Position <= p && !settled[c.ID] {
				t.Errorf("ack %s passes unsettled change %s", p, c.ID)
			}
		}
	}
	runUntilDone(t, tb.pipeline(t, nil))
	require.Len(t, tb.dlq.all(), 120/11)
}

func TestPipelineMergesFieldsAndDeadLettersSameFieldConflicts(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	seed(t, tb.a, 3)
	runUntilDone(t, tb.pipeline(t, nil))

	// Both sides edit row 1: different fields (merge) and row 2: the same field.
	require.NoError(t, tb.b.Update(customers, key(1), duplex.Values{"n": int64(100)}))
	require.NoError(t, tb.a.Update(customers, key(1), duplex.Values{"name": "from-a"}))
	require.NoError(t, tb.b.Update(customers, key(2), duplex.Values{"name": "b-wins?"}))
	require.NoError(t, tb.a.Update(customers, key(2), duplex.Values{"name": "a-wins?"}))
	tb.src = &recordingSource{next: tb.a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true})}
	runUntilDone(t, tb.pipeline(t, nil))

	require.Equal(t, duplex.Values{"id": int64(1), "name": "from-a", "n": int64(100), "note": nil}, tb.b.Get(customers, key(1)))
	require.Equal(t, "b-wins?", tb.b.Get(customers, key(2))["name"], "an unresolved conflict leaves the target as it is")
	dl := tb.dlq.all()
	require.Len(t, dl, 1)
	require.Equal(t, duplex.ReasonConflict, dl[0].Reason)
	require.Equal(t, duplex.UpdateUpdate, dl[0].Conflict.Kind)
	require.Equal(t, []string{"name"}, dl[0].Conflict.Fields)
	require.Equal(t, "a-wins?", dl[0].Conflict.Source["name"])
	require.Equal(t, "b-wins?", dl[0].Conflict.Target["name"])
	require.Equal(t, 1, tb.events.conflicts["update_update/dead_lettered"])
}

func TestPipelineResolverDecidesConflicts(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	seed(t, tb.a, 2)
	runUntilDone(t, tb.pipeline(t, nil))
	require.NoError(t, tb.b.Update(customers, key(1), duplex.Values{"name": "b", "n": int64(5)}))
	require.NoError(t, tb.a.Update(customers, key(1), duplex.Values{"name": "a", "n": int64(7)}))

	// Source wins "name"; "n" merges by delta (1 -> 7 on a, 1 -> 5 on b: 11).
	resolver := duplex.Chain(
		duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
			if c.IsConflicting("n") {
				base, _ := c.BaseValue("n")
				src, _ := c.SourceValue("n")
				cur, _ := c.TargetValue("n")
				c.Set("n", cur.(int64)+src.(int64)-base.(int64), "counter")
			}
			return nil
		}),
		duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
			for _, f := range c.Undecided() {
				c.Take(f, "source-wins")
			}
			return nil
		}),
	)
	tb.src = &recordingSource{next: tb.a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true})}
	runUntilDone(t, tb.pipeline(t, resolver))
	require.Equal(t, duplex.Values{"id": int64(1), "name": "a", "n": int64(11), "note": nil}, tb.b.Get(customers, key(1)))
	require.Empty(t, tb.dlq.all())
	require.Equal(t, 1, tb.events.conflicts["update_update/merged"])
}

func TestPipelineRereadsWhenTheTargetChangesUnderIt(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	seed(t, tb.a, 1)
	runUntilDone(t, tb.pipeline(t, nil))
	require.NoError(t, tb.a.Update(customers, key(1), duplex.Values{"name": "from-a"}))
	// Between the Pipeline's read and its write, a user on b edits the same field.
	var once sync.Once
	tb.target.setFail(func(int, *duplex.Batch) error {
		once.Do(func() { require.NoError(t, tb.b.Update(customers, key(1), duplex.Values{"name": "user-on-b"})) })
		return nil
	})
	tb.src = &recordingSource{next: tb.a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true})}
	runUntilDone(t, tb.pipeline(t, nil))
	require.Equal(t, "user-on-b", tb.b.Get(customers, key(1))["name"], "the user's edit was not overwritten")
	dl := tb.dlq.all()
	require.Len(t, dl, 1, "re-read found a same-field conflict")
	require.Equal(t, duplex.UpdateUpdate, dl[0].Conflict.Kind)
}

func TestPipelineDropsEchoesAndStopsWithTheSource(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	seed(t, tb.a, 5)
	require.NoError(t, tb.a.Do("duplex", func(tx *memdb.Tx) error {
		return tx.Insert(customers, duplex.Values{"id": int64(99), "name": "made by the sync", "n": int64(0)})
	}))
	p, err := duplex.NewPipeline(&duplex.Config{
		Name: "test", Direction: duplex.Direction{From: "a", To: "b"},
		Source: tb.src, Target: tb.target, DeadLetters: tb.dlq, Observer: tb.events, Logger: testLogger(t),
		LoopGuard: originGuard("duplex"), Options: tb.options,
	})
	require.NoError(t, err)
	runUntilDone(t, p)
	require.Nil(t, tb.b.Get(customers, key(99)))
	require.Len(t, tb.b.Rows(customers), 5)
	require.Equal(t, 1, tb.events.skipped[duplex.SkipEcho])
}

type originGuard string

func (g originGuard) Echo(_ context.Context, c *duplex.Change) (bool, error) {
	return c.Origin == string(g), nil
}

func TestPipelineReportsSchemaDriftOnce(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	tb.a = newDB(t, "a", false, "email") // a has a column b lacks
	tb.src = &recordingSource{next: tb.a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true})}
	seed(t, tb.a, 2)
	runUntilDone(t, tb.pipeline(t, nil))
	require.NoError(t, tb.a.Update(customers, key(1), duplex.Values{"email": "x@example.com", "name": "n1"}))
	require.NoError(t, tb.a.Update(customers, key(2), duplex.Values{"email": "y@example.com"}))
	tb.src = &recordingSource{next: tb.a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true})}
	runUntilDone(t, tb.pipeline(t, nil))
	require.Equal(t, "n1", tb.b.Get(customers, key(1))["name"], "known fields still sync")
	require.Equal(t, []string{"public.customers.email"}, tb.events.drift)
	require.Empty(t, tb.dlq.all())
}

func TestPipelineStopsOnAFailingDeadLetterSink(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	require.NoError(t, tb.a.Insert(customers, duplex.Values{"id": int64(1), "name": "x", "n": int64(-5)}))
	tb.dlq.fail = func(*duplex.DeadLetter) error { return errors.New("dlq table missing") }
	err := tb.pipeline(t, nil).Run(t.Context())
	require.ErrorContains(t, err, "dlq table missing")
	require.Empty(t, tb.src.lastAck(), "nothing acknowledged: the change is neither applied nor kept")
}

func TestPipelineSourceErrorIsReturned(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	p, err := duplex.NewPipeline(&duplex.Config{
		Name: "test", Direction: duplex.Direction{From: "a", To: "b"},
		Source: failingSource{}, Target: tb.target, DeadLetters: tb.dlq, Logger: testLogger(t),
	})
	require.NoError(t, err)
	err = p.Run(t.Context())
	require.ErrorContains(t, err, "slot was dropped")
	require.ErrorIs(t, p.Run(t.Context()), duplex.ErrAlreadyRunning)
}

type failingSource struct{}

func (failingSource) Stream(context.Context, duplex.Position, func(context.Context, []duplex.Change) error) error {
	return errors.New("slot was dropped")
}
func (failingSource) Ack(context.Context, duplex.Position) error { return nil }

func TestNewPipelineNamesEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := duplex.NewPipeline(&duplex.Config{Direction: duplex.Direction{From: "a", To: "a"}, Options: duplex.Options{BatchSize: -1}})
	require.Error(t, err)
	for _, want := range []string{"Name", "Direction", "Source", "Target", "DeadLetters", "BatchSize"} {
		require.Contains(t, err.Error(), want)
	}
	var ce *duplex.ConfigError
	require.ErrorAs(t, err, &ce)
	_, err = duplex.NewSync(&duplex.SyncConfig{Name: "x"})
	require.ErrorContains(t, err, "A.Name")
}

func TestSyncRunsBothDirectionsWithoutLoops(t *testing.T) {
	t.Parallel()
	a, b := newDB(t, "a", false), newDB(t, "b", false)
	seed(t, a, 20)
	for i := 21; i <= 40; i++ {
		require.NoError(t, b.Insert(customers, duplex.Values{"id": int64(i), "name": "from-b", "n": int64(i)}))
	}
	src := func(db *memdb.DB) duplex.ChangeSource {
		return db.Source(memdb.SourceConfig{Slot: "sync", SkipOrigins: []string{"duplex"}})
	}
	dlq := &deadLetters{}
	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name:        "pair",
		A:           duplex.Endpoint{Name: "a", Source: src(a), Applier: a.Applier("duplex")},
		B:           duplex.Endpoint{Name: "b", Source: src(b), Applier: b.Applier("duplex")},
		DeadLetters: dlq,
		Logger:      testLogger(t),
		Options:     fastOptions(),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, func() bool { return len(a.Rows(customers)) == 40 && len(b.Rows(customers)) == 40 })
	require.NoError(t, b.Update(customers, key(3), duplex.Values{"name": "edited on b"}))
	waitFor(t, func() bool { return a.Get(customers, key(3))["name"] == "edited on b" })
	cancel()
	require.NoError(t, <-done)
	requireSameRows(t, a, b)
	require.Empty(t, dlq.all())
	// No loops: a's log holds its 20 inserts, 20 applied from b, and one applied update.
	require.Len(t, a.Changes(), 41)
	require.Len(t, b.Changes(), 41)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestErrorClasses(t *testing.T) {
	t.Parallel()
	base := errors.New("boom")
	require.True(t, duplex.IsTransient(duplex.Transient(base)))
	require.True(t, duplex.IsPermanent(fmt.Errorf("wrapped: %w", duplex.Permanent(base))))
	require.True(t, duplex.IsUnavailable(duplex.Unavailable(base)))
	require.Equal(t, duplex.ClassUnknown, duplex.ClassOf(base))
	require.Equal(t, duplex.ClassUnavailable, duplex.ClassOf(context.Canceled))
	require.ErrorIs(t, duplex.Permanent(base), base)
	require.NoError(t, duplex.Transient(nil))
	require.Equal(t, "write 3: boom", (&duplex.BatchError{Index: 3, Err: base}).Error())
	require.True(t, duplex.IsPermanent(&duplex.ConfigError{Field: "X", Reason: "bad"}))
	require.True(t, strings.HasPrefix(duplex.Permanent(base).Error(), "boom"))
}

// flakyDedup fails while down is set and counts calls.
type flakyDedup struct {
	mu    sync.Mutex
	down  bool
	calls int
	marks map[string]bool
}

func (d *flakyDedup) Seen(_ context.Context, ids []string) ([]bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.down {
		return nil, duplex.Unavailable(errors.New("redis: connection refused"))
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		out[i] = d.marks[id]
	}
	return out, nil
}

func (d *flakyDedup) Mark(_ context.Context, ids []string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.down {
		return duplex.Unavailable(errors.New("redis: connection refused"))
	}
	for _, id := range ids {
		d.marks[id] = true
	}
	return nil
}

func TestPipelineCarriesOnWithoutADeadDeduper(t *testing.T) {
	t.Parallel()
	tb := newBed(t)
	tb.options.BatchSize = 5
	tb.src.twice = true
	seed(t, tb.a, 100)
	d := &flakyDedup{down: true, marks: map[string]bool{}}
	p, err := duplex.NewPipeline(&duplex.Config{
		Name: "test", Direction: duplex.Direction{From: "a", To: "b"},
		Source: tb.src, Target: tb.target, Deduper: d, DeadLetters: tb.dlq, Observer: tb.events,
		Logger: testLogger(t), Options: tb.options,
	})
	require.NoError(t, err)
	runUntilDone(t, p)
	requireSameRows(t, tb.a, tb.b)
	for id, n := range tb.target.appliedIDs() {
		require.Equal(t, 1, n, "change %s applied %d times: the ledger must guard while the deduper is down", id, n)
	}
	require.Less(t, d.calls, 10, "a dead deduper is left alone for a while, not asked for every batch")
}
