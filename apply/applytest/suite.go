package applytest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// concurrentTimeout bounds the Concurrent test.
const concurrentTimeout = time.Minute

func testInsertLookup(t *testing.T, b *bundle) {
	ins1, ins2 := b.insert(1, "alice", 1, nil), b.insert(2, "bob", 2, "b")
	batch := b.batch(ins1, ins2)
	require.NoError(t, b.a.Apply(t.Context(), batch))
	r1, r2 := row(1, "alice", 1, nil), row(2, "bob", 2, "b")

	got := b.lookup(t, 2, 99, 1, 2)
	requireValues(t, r2, got[0], "Lookup result 0 (id=2)")
	requireValues(t, nil, got[1], "Lookup result 1 (id=99, absent)")
	requireValues(t, r1, got[2], "Lookup result 2 (id=1)")
	requireValues(t, r2, got[3], "Lookup result 3 (id=2 again)")
	b.requireRow(t, 1, r1, "after insert")
	b.requireRow(t, 2, r2, "after insert")

	none, err := b.a.Lookup(t.Context(), b.table, nil)
	require.NoError(t, err, "Lookup of no keys")
	require.Empty(t, none, "Lookup of no keys")

	// Neither the batch nor Lookup's results alias the stored rows.
	batch.Writes[0].Set["name"] = "changed in the batch"
	got[2]["name"] = "changed in a Lookup result"
	requireValues(t, r1, b.lookup(t, 1)[0], "Apply must not keep the batch, nor Lookup hand out stored rows")
	b.requireRow(t, 1, r1, "after modifying the batch and a Lookup result")
}

func testUpdateOnlySetFields(t *testing.T, b *bundle) {
	b.mustApply(t, b.insert(1, "a", 5, "keep"), b.insert(2, "other", 7, "other"))
	b.mustApply(t, b.update(1, duplex.Values{"n": int64(6)}, nil))
	b.requireRow(t, 1, row(1, "a", 6, "keep"), "after updating n")
	b.mustApply(t, b.update(1, duplex.Values{"note": "new"}, nil))
	b.requireRow(t, 1, row(1, "a", 6, "new"), "after updating note")
	b.mustApply(t, b.update(1, duplex.Values{"name": "b", "n": int64(0)}, nil))
	b.requireRow(t, 1, row(1, "b", 0, "new"), "after updating name and n")
	b.requireRow(t, 2, row(2, "other", 7, "other"), "another row")
}

func testDelete(t *testing.T, b *bundle) {
	b.mustApply(t, b.insert(1, "a", 1, nil), b.insert(2, "b", 2, nil))
	b.mustApply(t, b.del(1, nil))
	b.requireRow(t, 1, nil, "after delete")
	b.requireRow(t, 2, row(2, "b", 2, nil), "another row")
	requireValues(t, nil, b.lookup(t, 1)[0], "Lookup after delete")

	require.NoError(t, b.apply(t.Context(), b.del(1, nil)), "deleting a row that is gone is not an error")
	require.NoError(t, b.apply(t.Context(), b.del(42, nil)), "deleting a row that never existed is not an error")
	b.requireRow(t, 2, row(2, "b", 2, nil), "another row")
}

func testBatchAtomic(t *testing.T, b *bundle) {
	b.mustApply(t, b.insert(10, "ten", 10, nil), b.insert(11, "eleven", 11, nil))

	// The third write of each batch violates CHECK (n >= 0).
	err := b.apply(t.Context(),
		b.insert(1, "one", 1, nil),
		b.update(10, duplex.Values{"n": int64(20)}, nil),
		b.insert(2, "two", -1, nil),
		b.insert(3, "three", 3, nil),
	)
	requireCheckViolation(t, err, "an insert violating the CHECK constraint")
	for _, id := range []int64{1, 2, 3} {
		b.requireRow(t, id, nil, "a failed batch writes nothing")
	}
	b.requireRow(t, 10, row(10, "ten", 10, nil), "a failed batch writes nothing")

	err = b.apply(t.Context(),
		b.update(10, duplex.Values{"n": int64(30)}, nil),
		b.update(11, duplex.Values{"name": "changed"}, nil),
		b.update(10, duplex.Values{"n": int64(-5)}, nil),
		b.insert(4, "four", 4, nil),
	)
	requireCheckViolation(t, err, "an update violating the CHECK constraint")
	b.requireRow(t, 10, row(10, "ten", 10, nil), "a failed batch writes nothing")
	b.requireRow(t, 11, row(11, "eleven", 11, nil), "a failed batch writes nothing")
	b.requireRow(t, 4, nil, "a failed batch writes nothing")

	// The applier is still usable.
	b.mustApply(t, b.insert(5, "five", 5, nil))
	b.requireRow(t, 5, row(5, "five", 5, nil), "after a failed batch")
}

// requireCheckViolation checks the error of a batch whose write 2 violates
// the CHECK constraint: permanent, and a BatchError with Index 2 if it is
// one.
func requireCheckViolation(t *testing.T, err error, what string) {
	t.Helper()
	require.Error(t, err, "%s must fail the batch", what)
	require.True(t, duplex.IsPermanent(err), "%s is a permanent error, got class %s: %v", what, duplex.ClassOf(err), err)
	require.NotErrorIs(t, err, duplex.ErrStale, what)
	requireIndex(t, err, 2, what)
}

func testSameKeyTwiceInBatch(t *testing.T, b *bundle) {
	b.mustApply(t,
		b.insert(1, "a", 1, nil),
		b.update(1, duplex.Values{"n": int64(2)}, nil),
		b.update(1, duplex.Values{"name": "b"}, nil),
	)
	b.requireRow(t, 1, row(1, "b", 2, nil), "insert then updates in one batch")

	b.mustApply(t, b.update(1, duplex.Values{"n": int64(5)}, nil), b.update(1, duplex.Values{"n": int64(4)}, nil))
	b.requireRow(t, 1, row(1, "b", 4, nil), "two updates of one field: the later wins")

	b.mustApply(t, b.insert(2, "old", 1, "old"))
	b.mustApply(t, b.del(2, nil), b.insert(2, "new", 7, nil))
	b.requireRow(t, 2, row(2, "new", 7, nil), "delete then insert in one batch")

	b.mustApply(t, b.insert(3, "gone", 1, nil), b.del(3, nil))
	b.requireRow(t, 3, nil, "insert then delete in one batch")
}

func testStaleExpectation(t *testing.T, b *bundle) {
	ctx := t.Context()
	b.mustApply(t, b.insert(1, "a", 1, nil))
	seen := b.lookup(t, 1)[0]

	// A user's edit between Lookup and Apply is never overwritten.
	require.NoError(t, b.h.UserUpdate(ctx, 1, duplex.Values{"name": "user"}))
	err := b.apply(ctx, b.update(1, duplex.Values{"name": "sync"}, duplex.Values{"name": seen["name"]}))
	requireStale(t, err, 0, "update expecting a value a user changed since")
	b.requireRow(t, 1, row(1, "user", 1, nil), "the user's value is kept")

	// An expectation that holds.
	b.mustApply(t, b.update(1, duplex.Values{"name": "sync"}, duplex.Values{"name": "user"}))
	b.requireRow(t, 1, row(1, "sync", 1, nil), "update whose expectation holds")

	// NULL is a value like any other.
	b.mustApply(t, b.update(1, duplex.Values{"note": "x"}, duplex.Values{"note": nil}))
	b.requireRow(t, 1, row(1, "sync", 1, "x"), "update expecting NULL")
	require.NoError(t, b.h.UserUpdate(ctx, 1, duplex.Values{"note": nil}))
	err = b.apply(ctx, b.update(1, duplex.Values{"note": "y"}, duplex.Values{"note": "x"}))
	requireStale(t, err, 0, "update expecting a value a user set to NULL since")
	require.NoError(t, b.h.UserUpdate(ctx, 1, duplex.Values{"note": "user"}))
	err = b.apply(ctx, b.update(1, duplex.Values{"note": "y"}, duplex.Values{"note": nil}))
	requireStale(t, err, 0, "update expecting NULL where a user set a value since")
	b.requireRow(t, 1, row(1, "sync", 1, "user"), "the user's value is kept")

	// Insert of a key that exists, update of a row that does not.
	err = b.apply(ctx, b.insert(1, "again", 5, nil))
	requireStale(t, err, 0, "insert of an existing key")
	b.requireRow(t, 1, row(1, "sync", 1, "user"), "the existing row is kept")
	err = b.apply(ctx, b.update(2, duplex.Values{"n": int64(2)}, nil))
	requireStale(t, err, 0, "update of a missing row")
	b.requireRow(t, 2, nil, "an update never creates a row")

	// Delete expecting the whole row as it was read.
	seen = b.lookup(t, 1)[0]
	require.NoError(t, b.h.UserUpdate(ctx, 1, duplex.Values{"n": int64(99)}))
	err = b.apply(ctx, b.del(1, seen))
	requireStale(t, err, 0, "delete expecting a row a user changed since")
	b.requireRow(t, 1, row(1, "sync", 99, "user"), "the changed row is not deleted")
	b.mustApply(t, b.del(1, b.lookup(t, 1)[0]))
	b.requireRow(t, 1, nil, "delete whose expectation holds")

	// A stale write fails the whole batch.
	b.mustApply(t, b.insert(3, "three", 3, nil), b.insert(4, "four", 4, nil))
	require.NoError(t, b.h.UserUpdate(ctx, 4, duplex.Values{"n": int64(40)}))
	err = b.apply(ctx,
		b.update(3, duplex.Values{"n": int64(30)}, duplex.Values{"n": int64(3)}),
		b.update(4, duplex.Values{"n": int64(41)}, duplex.Values{"n": int64(4)}),
	)
	requireStale(t, err, 1, "second write of a batch stale")
	b.requireRow(t, 3, row(3, "three", 3, nil), "a stale batch writes nothing")
	b.requireRow(t, 4, row(4, "four", 40, nil), "the user's value is kept")
}

func testCheckpoint(t *testing.T, b *bundle) {
	ctx := t.Context()
	cp, ok := b.a.(duplex.Checkpointer)
	require.True(t, ok, "Features.Checkpoints: %T must implement duplex.Checkpointer", b.a)
	srcA, srcB := b.source+"_a", b.source+"_b"
	requireCheckpoint := func(source string, want duplex.Position, what string) {
		t.Helper()
		got, err := cp.Checkpoint(ctx, source)
		require.NoError(t, err)
		require.Equal(t, want, got, "checkpoint of %s %s", source, what)
	}
	requireCheckpoint(srcA, "", "before any batch")

	require.NoError(t, b.a.Apply(ctx, &duplex.Batch{Source: srcA, Checkpoint: "0/1", Writes: []duplex.Write{b.insert(1, "a", 1, nil)}}))
	requireCheckpoint(srcA, "0/1", "after a batch")

	err := b.a.Apply(ctx, &duplex.Batch{Source: srcA, Checkpoint: "0/2", Writes: []duplex.Write{
		b.insert(2, "b", 2, nil), b.insert(3, "c", 3, nil), b.insert(4, "bad", -1, nil),
	}})
	require.Error(t, err)
	requireCheckpoint(srcA, "0/1", "after a failed batch")
	b.requireRow(t, 2, nil, "a failed batch writes nothing")

	if b.f.Expectations {
		err = b.a.Apply(ctx, &duplex.Batch{Source: srcA, Checkpoint: "0/2", Writes: []duplex.Write{b.insert(1, "again", 1, nil)}})
		require.ErrorIs(t, err, duplex.ErrStale)
		requireCheckpoint(srcA, "0/1", "after a stale batch")
	}

	require.NoError(t, b.a.Apply(ctx, &duplex.Batch{Source: srcB, Checkpoint: "9/1", Writes: []duplex.Write{b.insert(5, "e", 5, nil)}}))
	requireCheckpoint(srcB, "9/1", "after its batch")
	requireCheckpoint(srcA, "0/1", "after another source's batch")

	require.NoError(t, b.a.Apply(ctx, &duplex.Batch{Source: srcA, Writes: []duplex.Write{b.insert(6, "f", 6, nil)}}))
	requireCheckpoint(srcA, "0/1", "after a batch without a checkpoint")

	// A batch may carry only a checkpoint (every change was an echo).
	require.NoError(t, b.a.Apply(ctx, &duplex.Batch{Source: srcA, Checkpoint: "0/3"}))
	requireCheckpoint(srcA, "0/3", "after a batch with no writes")

	// Another instance sees the same state.
	cp2, ok := b.h.Applier().(duplex.Checkpointer)
	require.True(t, ok)
	got, err := cp2.Checkpoint(ctx, srcA)
	require.NoError(t, err)
	require.Equal(t, duplex.Position("0/3"), got, "checkpoint read through another Applier instance")
}

func testLedger(t *testing.T, b *bundle) {
	ctx := t.Context()
	l, ok := b.a.(duplex.Ledger)
	require.True(t, ok, "Features.Ledger: %T must implement duplex.Ledger", b.a)
	requireApplied := func(writes []duplex.Write, want bool, what string) {
		t.Helper()
		ids := make([]string, len(writes))
		for i, w := range writes {
			ids[i] = w.Change.ID
		}
		got, err := l.Applied(ctx, ids)
		require.NoError(t, err)
		require.Len(t, got, len(ids), "Applied returns one answer per id")
		for i, g := range got {
			require.Equal(t, want, g, "Applied(%s) %s", ids[i], what)
		}
	}

	ok1 := []duplex.Write{b.insert(1, "a", 1, nil), b.update(1, duplex.Values{"n": int64(2)}, nil)}
	requireApplied(ok1, false, "before the apply")
	b.mustApply(t, ok1...)
	requireApplied(ok1, true, "after the apply")

	failed := []duplex.Write{b.insert(2, "b", 2, nil), b.insert(3, "c", 3, nil), b.insert(4, "bad", -1, nil)}
	require.Error(t, b.apply(ctx, failed...))
	requireApplied(failed, false, "after a failed batch")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	canceled := []duplex.Write{b.insert(5, "e", 5, nil)}
	require.Error(t, b.apply(cctx, canceled...))
	requireApplied(canceled, false, "after an apply with a canceled context")

	none, err := l.Applied(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, none)
	requireApplied(ok1, true, "read again")
}

func testNullValues(t *testing.T, b *bundle) {
	b.mustApply(t, b.insert(1, "a", 1, nil), b.insert(2, "b", 2, "y"))
	b.requireRow(t, 1, row(1, "a", 1, nil), "insert with a NULL note")
	requireValues(t, row(1, "a", 1, nil), b.lookup(t, 1)[0], "Lookup of a row with a NULL note")

	b.mustApply(t, b.update(1, duplex.Values{"note": "x"}, nil))
	b.requireRow(t, 1, row(1, "a", 1, "x"), "after setting note")
	b.mustApply(t, b.update(1, duplex.Values{"note": nil}, nil))
	b.requireRow(t, 1, row(1, "a", 1, nil), "after setting note to NULL")
	requireValues(t, row(1, "a", 1, nil), b.lookup(t, 1)[0], "Lookup after setting note to NULL")

	b.mustApply(t, b.update(2, duplex.Values{"note": nil, "n": int64(3)}, nil))
	b.requireRow(t, 2, row(2, "b", 3, nil), "after setting note to NULL and n")
}

func testRepeatSafe(t *testing.T, b *bundle) {
	ctx := t.Context()
	inserts := b.batch(b.insert(1, "a", 1, nil), b.insert(2, "b", 2, "n"))
	require.NoError(t, b.a.Apply(ctx, inserts))
	r1, r2 := row(1, "a", 1, nil), row(2, "b", 2, "n")

	// The same batch again (same writes, same change IDs): ErrStale (the
	// rows exist) or success without changing them.
	if err := b.a.Apply(ctx, inserts); err != nil {
		require.ErrorIs(t, err, duplex.ErrStale, "a repeated insert either succeeds or fails with ErrStale")
	}
	b.requireRow(t, 1, r1, "after repeating the inserts")
	b.requireRow(t, 2, r2, "after repeating the inserts")

	update := b.batch(b.update(1, duplex.Values{"n": int64(5)}, nil))
	require.NoError(t, b.a.Apply(ctx, update))
	require.NoError(t, b.a.Apply(ctx, update), "repeating an update without expectation")
	b.requireRow(t, 1, row(1, "a", 5, nil), "after repeating an update")

	del := b.batch(b.del(2, nil))
	require.NoError(t, b.a.Apply(ctx, del))
	require.NoError(t, b.a.Apply(ctx, del), "repeating a delete")
	b.requireRow(t, 2, nil, "after repeating a delete")
}

func testCanceledContext(t *testing.T, b *bundle) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	batch := b.batch(b.insert(1, "a", 1, nil))
	batch.Checkpoint = "0/1"
	err := b.a.Apply(ctx, batch)
	require.Error(t, err, "Apply with a canceled context")
	require.False(t, duplex.IsPermanent(err), "a canceled context must not make a permanent error (the change would be dead-lettered): %v", err)
	b.requireRow(t, 1, nil, "Apply with a canceled context writes nothing")
	if cp, ok := b.a.(duplex.Checkpointer); ok && b.f.Checkpoints {
		got, err := cp.Checkpoint(t.Context(), b.source)
		require.NoError(t, err)
		require.Empty(t, got, "Apply with a canceled context records no checkpoint")
	}
}

func testConcurrent(t *testing.T, b *bundle) {
	const workers, batches = 4, 25
	ctx := t.Context()
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range int64(workers) {
		// Writes are built here, in the test goroutine: bundle is not safe
		// for concurrent use, the Applier is.
		var work []*duplex.Batch
		for i := range int64(batches) {
			id := w*1000 + i
			batch := b.batch(b.insert(id, fmt.Sprintf("w%d", w), i, nil), b.update(id, duplex.Values{"note": "done"}, nil))
			batch.Source = fmt.Sprintf("%s_w%d", b.source, w)
			batch.Checkpoint = duplex.Position(fmt.Sprintf("%020d", i))
			work = append(work, batch)
		}
		wg.Go(func() {
			for i, batch := range work {
				if err := b.a.Apply(ctx, batch); err != nil {
					errs <- fmt.Errorf("worker %d, batch %d: %w", w, i, err)
					return
				}
				if _, err := b.a.Lookup(ctx, b.table, []duplex.Key{key(w*1000 + int64(i))}); err != nil {
					errs <- fmt.Errorf("worker %d, lookup %d: %w", w, i, err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(concurrentTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatalf("concurrent applies did not finish within %v", concurrentTimeout)
	}
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for w := range int64(workers) {
		for i := range int64(batches) {
			id := w*1000 + i
			b.requireRow(t, id, row(id, fmt.Sprintf("w%d", w), i, "done"), "after concurrent applies")
		}
		if cp, ok := b.a.(duplex.Checkpointer); ok && b.f.Checkpoints {
			got, err := cp.Checkpoint(ctx, fmt.Sprintf("%s_w%d", b.source, w))
			require.NoError(t, err)
			require.Equal(t, duplex.Position(fmt.Sprintf("%020d", batches-1)), got, "checkpoint of worker %d", w)
		}
	}
}

// testAgreements: a batch's agreement records commit with its writes, and
// only with them: a batch that fails writes no record; a batch of records
// alone commits them.
func testAgreements(t *testing.T, b *bundle) {
	k, ok := b.a.(duplex.AgreementKeeper)
	require.True(t, ok, "the applier must implement duplex.AgreementKeeper")
	rec := func(v uint64, n int64) []duplex.AgreementWrite {
		r := row(1, "a", n, nil)
		return []duplex.AgreementWrite{{Table: b.table, Key: key(1), Agreement: duplex.Agreement{Known: true, Version: v, Row: r, Peer: r}}}
	}
	load := func(what string) duplex.Agreement {
		as, err := k.Agreements(t.Context(), b.table, []duplex.Key{key(1)})
		require.NoError(t, err, what)
		require.Len(t, as, 1, what)
		return as[0]
	}
	require.False(t, load("before any batch").Known)

	batch := b.batch(b.insert(1, "a", 1, nil))
	batch.Agreements = rec(1, 1)
	require.NoError(t, b.a.Apply(t.Context(), batch))
	got := load("after the insert")
	require.True(t, got.Known)
	require.Equal(t, uint64(1), got.Version)
	requireValues(t, row(1, "a", 1, nil), got.Row, "agreed row")

	// The second write violates CHECK (n >= 0): nothing commits, records included.
	batch = b.batch(b.update(1, duplex.Values{"n": int64(2)}, nil), b.insert(2, "two", -1, nil))
	batch.Agreements = rec(2, 2)
	require.Error(t, b.a.Apply(t.Context(), batch))
	require.Equal(t, uint64(1), load("after a failed batch").Version, "a failed batch writes no record")
	b.requireRow(t, 1, row(1, "a", 1, nil), "a failed batch writes nothing")

	// Records alone.
	require.NoError(t, b.a.Apply(t.Context(), &duplex.Batch{Source: b.source, Agreements: rec(3, 1)}))
	require.Equal(t, uint64(3), load("after a batch of records").Version)

	// A first record (Version 1) of a key that holds one already replaces
	// it, with the batch's writes (as when a batch is sent again after its
	// commit).
	batch = b.batch(b.update(1, duplex.Values{"n": int64(5)}, nil))
	batch.Agreements = rec(1, 5)
	require.NoError(t, b.a.Apply(t.Context(), batch))
	got = load("after a first record over an existing one")
	require.Equal(t, uint64(1), got.Version)
	requireValues(t, row(1, "a", 5, nil), got.Row, "agreed row")
	b.requireRow(t, 1, row(1, "a", 5, nil), "the batch's write commits with the record")

	// A record that is not Known removes the key's record.
	require.NoError(t, b.a.Apply(t.Context(), &duplex.Batch{Source: b.source,
		Agreements: []duplex.AgreementWrite{{Table: b.table, Key: key(1)}}}))
	require.False(t, load("after removing the record").Known)

	testAgreedLookup(t, b, k)
}

// testAgreedLookup: an AgreedLookup reads what Lookup and Agreements read,
// key by key, for keys with a row and a record, a row only, a record only
// (a row agreed absent), and neither.
func testAgreedLookup(t *testing.T, b *bundle, k duplex.AgreementKeeper) {
	l, ok := b.a.(duplex.AgreedLookup)
	if !ok {
		return
	}
	peer := row(10, "peer", 7, nil)
	require.NoError(t, b.a.Apply(t.Context(), &duplex.Batch{Source: b.source,
		Writes: []duplex.Write{b.insert(10, "ten", 10, nil), b.insert(11, "eleven", 11, nil)},
		Agreements: []duplex.AgreementWrite{
			{Table: b.table, Key: key(10), Agreement: duplex.Agreement{Known: true, Version: 4, Row: row(10, "ten", 10, nil), Peer: peer, Unknown: []string{"s"}}},
			{Table: b.table, Key: key(12), Agreement: duplex.Agreement{Known: true, Version: 2}},
		}}))
	keys := []duplex.Key{key(13), key(12), key(11), key(10)}
	rows, ags, err := l.LookupAgreements(t.Context(), b.table, keys)
	require.NoError(t, err)
	wantRows, err := b.a.Lookup(t.Context(), b.table, keys)
	require.NoError(t, err)
	wantAgs, err := k.Agreements(t.Context(), b.table, keys)
	require.NoError(t, err)
	require.Len(t, rows, len(keys))
	require.Len(t, ags, len(keys))
	for i, kk := range keys {
		requireValues(t, wantRows[i], rows[i], "row of %s", kk)
		require.Equal(t, wantAgs[i].Known, ags[i].Known, "record of %s", kk)
		require.Equal(t, wantAgs[i].Version, ags[i].Version, "record of %s", kk)
		require.Equal(t, wantAgs[i].Unknown, ags[i].Unknown, "record of %s", kk)
		requireValues(t, wantAgs[i].Row, ags[i].Row, "agreed row of %s", kk)
		requireValues(t, wantAgs[i].Peer, ags[i].Peer, "peer row of %s", kk)
	}
	require.Nil(t, rows[0], "no row, no record")
	require.False(t, ags[0].Known, "no row, no record")
	require.True(t, ags[1].Known, "a row agreed absent")
	require.Nil(t, ags[1].Row, "a row agreed absent")
	require.Nil(t, ags[2].Row, "a row without a record")
	require.False(t, ags[2].Known, "a row without a record")
	requireValues(t, peer, ags[3].Peer, "peer row")
	require.Equal(t, []string{"s"}, ags[3].Unknown)
}
