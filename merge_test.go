package duplex_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
	"github.com/duplexsync/duplex/resolve"
)

// mergeBed is an actionBed for merges (its appliers keep the agreement
// records, as memdb's do).
func mergeBed(t *testing.T, resolver duplex.Resolver) *actionBed {
	t.Helper()
	ab := &actionBed{a: newDB(t, "a", false), b: newDB(t, "b", false), dlq: &deadLetters{}}
	ab.fa, ab.fb = newFaulty(ab.a.Applier("duplex")), newFaulty(ab.b.Applier("duplex"))
	src := func(db *memdb.DB) duplex.ChangeSource {
		return db.Source(memdb.SourceConfig{Slot: "sync", SkipOrigins: []string{"duplex"}})
	}
	var err error
	ab.sync, err = duplex.NewSync(&duplex.SyncConfig{
		Name:        "pair",
		A:           duplex.Endpoint{Name: "a", Source: src(ab.a), Applier: ab.fa},
		B:           duplex.Endpoint{Name: "b", Source: src(ab.b), Applier: ab.fb},
		Resolver:    resolver,
		DeadLetters: ab.dlq,
		Logger:      testLogger(t),
		Options:     fastOptions(),
	})
	require.NoError(t, err)
	return ab
}

// isWriteBack reports whether b is a two-way merge's write back to the
// source (its changes carry no ID).
func isWriteBack(b *duplex.Batch) bool {
	return len(b.Writes) > 0 && b.Writes[0].Change != nil && b.Writes[0].Change.ID == ""
}

// anyDeadLetter waits for a dead letter of key id, in either direction.
func anyDeadLetter(t *testing.T, ab *actionBed, id int64) duplex.DeadLetter {
	t.Helper()
	var found duplex.DeadLetter
	waitFor(t, func() bool {
		for _, dl := range ab.dlq.all() {
			if dl.Change.Key.String() == key(id).String() {
				found = dl
				return true
			}
		}
		return false
	})
	return found
}

// agreementOf returns db's agreement record of key id.
func agreementOf(t *testing.T, db *memdb.DB, id int64) duplex.Agreement {
	t.Helper()
	as, err := db.Applier("duplex").Agreements(context.Background(), customers, []duplex.Key{key(id)})
	require.NoError(t, err)
	return as[0]
}

// agreedBase returns the base the next merge of key id takes from both
// systems' records: the row of records of one version, else the newer
// record's Peer (see docs/two-way-merge.md).
func agreedBase(t *testing.T, a, b *memdb.DB, id int64) (duplex.Values, bool) {
	t.Helper()
	ra, rb := agreementOf(t, a, id), agreementOf(t, b, id)
	switch {
	case !ra.Known && !rb.Known:
		return nil, false
	case ra.Version == rb.Version:
		return ra.Row, true
	case ra.Version > rb.Version:
		return ra.Peer, true
	}
	return rb.Peer, true
}

// agreedOnBoth reports whether the records of key id give the next merge
// a base holding row's fields.
func agreedOnBoth(t *testing.T, ab *actionBed, id int64, row duplex.Values) bool {
	t.Helper()
	base, ok := agreedBase(t, ab.a, ab.b, id)
	if !ok {
		return false
	}
	for f, v := range row {
		if !duplex.Equal(base[f], v) {
			return false
		}
	}
	return true
}

// Both sides add to a counter while the sync is down; the merge writes the
// sum to the target, but a user adds again to the source before the write
// back lands. The write back is refused (stale) and the source keeps its
// older record; the user's change, merged next against the target's newer
// record, adds only the user's delta: every edit counts once.
func TestMergeStaleWriteBackKeepsEveryEdit(t *testing.T) {
	t.Parallel()
	ab := mergeBed(t, resolve.CounterDelta("n"))
	ab.seedBoth(t, 1)                                                                // n = 1
	require.NoError(t, ab.a.Update(customers, key(1), duplex.Values{"n": int64(3)})) // +2
	require.NoError(t, ab.b.Update(customers, key(1), duplex.Values{"n": int64(6)})) // +5
	var once sync.Once
	edit := func(db *memdb.DB) func(int, *duplex.Batch) error {
		return func(_ int, b *duplex.Batch) error {
			if isWriteBack(b) {
				once.Do(func() {
					n := db.Get(customers, key(1))["n"].(int64)
					require.NoError(t, db.Update(customers, key(1), duplex.Values{"n": n + 1})) // +1, a user's
				})
			}
			return nil
		}
	}
	ab.fa.setFail(edit(ab.a))
	ab.fb.setFail(edit(ab.b))
	ab.run(t)
	waitFor(t, func() bool {
		return ab.a.Get(customers, key(1))["n"] == int64(9) && ab.b.Get(customers, key(1))["n"] == int64(9)
	})
	requireSameRows(t, ab.a, ab.b)
	waitFor(t, func() bool { return agreedOnBoth(t, ab, 1, duplex.Values{"n": int64(9)}) })
	require.Empty(t, ab.dlq.all(), "1 + 2 + 5 + 1 is 9, decided without a person")
}

// A write back that keeps failing dead-letters its change with the reason.
// Here b's own change to the row is still on its way to a; merged as a
// target write (no write back needed), it then brings both sides together.
func TestMergeWriteBackFailureDeadLetters(t *testing.T) {
	t.Parallel()
	ab := mergeBed(t, nil)
	ab.seedBoth(t, 1)
	require.NoError(t, ab.a.Update(customers, key(1), duplex.Values{"name": "from a"}))
	require.NoError(t, ab.b.Update(customers, key(1), duplex.Values{"n": int64(42)}))
	refuse := func(_ int, b *duplex.Batch) error {
		if isWriteBack(b) {
			return duplex.Permanent(errors.New("permission denied for table customers"))
		}
		return nil
	}
	ab.fa.setFail(refuse)
	ab.fb.setFail(refuse)
	ab.run(t)
	dl := anyDeadLetter(t, ab, 1)
	require.Contains(t, dl.Error, "writing the merged row back to")
	require.Contains(t, dl.Error, "permission denied for table customers")
	waitFor(t, func() bool { return agreedOnBoth(t, ab, 1, duplex.Values{"name": "from a", "n": int64(42)}) })
	requireSameRows(t, ab.a, ab.b)
}

// mergeBothEdits runs the sync with fail watching both systems' Applies
// and waits until key 1 holds both edits ("from a", 42) and its records
// agree on both systems.
func mergeBothEdits(t *testing.T, ab *actionBed, fail func(int, *duplex.Batch) error) {
	t.Helper()
	ab.fa.setFail(fail)
	ab.fb.setFail(fail)
	ab.run(t)
	waitFor(t, func() bool { return agreedOnBoth(t, ab, 1, duplex.Values{"name": "from a", "n": int64(42)}) })
	requireSameRows(t, ab.a, ab.b)
}

// A write-back failing with a transient error (a serialization failure,
// an admin shutdown during an outage) many more times than MaxAttempts is
// waited out, never dead-lettered: an outage of the source costs no DLQ
// entry, and the rows converge once it ends.
func TestMergeWriteBackOutageIsAWait(t *testing.T) {
	t.Parallel()
	for _, class := range []struct {
		name string
		wrap func(error) error
	}{{"transient", duplex.Transient}, {"unavailable", duplex.Unavailable}} {
		t.Run(class.name, func(t *testing.T) {
			t.Parallel()
			ab := mergeBed(t, nil)
			ab.seedBoth(t, 1)
			require.NoError(t, ab.a.Update(customers, key(1), duplex.Values{"name": "from a"}))
			require.NoError(t, ab.b.Update(customers, key(1), duplex.Values{"n": int64(42)}))
			var mu sync.Mutex
			failed := 0
			outage := func(_ int, b *duplex.Batch) error {
				if !isWriteBack(b) {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				if failed < 5*fastOptions().MaxAttempts {
					failed++
					return class.wrap(errors.New("could not serialize access due to concurrent update"))
				}
				return nil
			}
			mergeBothEdits(t, ab, outage)
			mu.Lock()
			require.Equal(t, 5*fastOptions().MaxAttempts, failed, "the write-back failed past the retry budget")
			mu.Unlock()
			require.Empty(t, ab.dlq.all(), "an outage is a wait, not a dead letter")
		})
	}
}

// A merge that writes both systems commits each system's record with its
// write: the target's with the target's write, the source's with the
// write back, both of one version.
func TestMergeCommitsEachRecordWithItsWrite(t *testing.T) {
	t.Parallel()
	ab := mergeBed(t, nil)
	ab.seedBoth(t, 1)
	require.NoError(t, ab.a.Update(customers, key(1), duplex.Values{"name": "from a"}))
	require.NoError(t, ab.b.Update(customers, key(1), duplex.Values{"n": int64(42)}))
	var mu sync.Mutex
	var recordsWithWrites int
	watch := func(_ int, b *duplex.Batch) error {
		if len(b.Writes) > 0 && len(b.Agreements) > 0 {
			mu.Lock()
			recordsWithWrites++
			mu.Unlock()
		}
		return nil
	}
	mergeBothEdits(t, ab, watch)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 2, recordsWithWrites, "one merge: the target's write and the write back, each with its record")
	require.Empty(t, ab.dlq.all())
}

// Resolving a dead letter by hand records the winner's row as the agreed
// row on both systems, so the next merge of the key starts from it.
func TestResolveRecordsTheAgreement(t *testing.T) {
	t.Parallel()
	ab := mergeBed(t, nil)
	ab.seedBoth(t, 1)
	require.NoError(t, ab.a.Update(customers, key(1), duplex.Values{"name": "from a"}))
	require.NoError(t, ab.b.Update(customers, key(1), duplex.Values{"name": "from b"}))
	ab.run(t)
	dl := anyDeadLetter(t, ab, 1)
	res, err := ab.sync.Resolve(t.Context(), &dl, "b")
	require.NoError(t, err, "%+v", res)
	requireSameRows(t, ab.a, ab.b)
	require.True(t, agreedOnBoth(t, ab, 1, duplex.Values{"name": "from b"}))
}

// blockingCheckpoint is an Applier whose Checkpoint waits for ctx.
type blockingCheckpoint struct{ *memdb.Applier }

func (b blockingCheckpoint) Checkpoint(ctx context.Context, _ string) (duplex.Position, error) {
	<-ctx.Done()
	return "", ctx.Err()
}

// Stopping a Pipeline while it reads its checkpoint is a stop, not a failure.
func TestRunStoppedWhileStartingReturnsNil(t *testing.T) {
	t.Parallel()
	a, b := newDB(t, "a", false), newDB(t, "b", false)
	p, err := duplex.NewPipeline(&duplex.Config{
		Name: "start", Direction: duplex.Direction{From: "a", To: "b"},
		Source: a.Source(memdb.SourceConfig{Slot: "s"}), Target: blockingCheckpoint{b.Applier("duplex")},
		DeadLetters: &deadLetters{}, Logger: testLogger(t), Options: fastOptions(),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	cancel()
	require.NoError(t, <-done)
}

// plainApplier hides every interface of an Applier but Applier itself: its
// agreement records then live in the Endpoint's AgreementStore.
type plainApplier struct{ duplex.Applier }

// A process restarted on the in-memory default forgets its agreements, and
// its source delivers the changes after the last acknowledged position
// again. A counter one side raised from 1 to 3, already merged (both hold
// 3), must stay 3: the forgotten base is not guessed from the redelivered
// change's before image (which made a counter merge add the delta again:
// 3 + 3 - 1 = 5), and a guessed base never feeds CounterDelta.
func TestForgottenAgreementNeverCountsTwice(t *testing.T) {
	t.Parallel()
	a, b := newDB(t, "a", false), newDB(t, "b", false)
	for _, db := range []*memdb.DB{a, b} {
		require.NoError(t, db.Do("duplex", func(tx *memdb.Tx) error {
			return tx.Insert(customers, duplex.Values{"id": int64(1), "name": "c1", "n": int64(1), "note": nil})
		}))
		require.NoError(t, db.Source(memdb.SourceConfig{Slot: "first"}).Ack(t.Context(), db.Changes()[0].Position))
		require.NoError(t, db.Source(memdb.SourceConfig{Slot: "again"}).Ack(t.Context(), db.Changes()[0].Position))
	}
	require.NoError(t, a.Update(customers, key(1), duplex.Values{"n": int64(3)})) // +2 on a
	run := func(slot string) *deadLetters {
		dlq := &deadLetters{}
		endpoint := func(db *memdb.DB) duplex.Endpoint {
			return duplex.Endpoint{
				Name:       db.Name(),
				Source:     db.Source(memdb.SourceConfig{Slot: slot, SkipOrigins: []string{"duplex"}, StopWhenIdle: true}),
				Applier:    plainApplier{db.Applier("duplex")},
				Agreements: duplex.NewMemoryAgreements(16), // a new process: nothing remembered
			}
		}
		s, err := duplex.NewSync(&duplex.SyncConfig{
			Name: "forget", A: endpoint(a), B: endpoint(b), Resolver: resolve.CounterDelta("n"),
			DeadLetters: dlq, Logger: testLogger(t), Options: fastOptions(),
		})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		require.NoError(t, s.Run(ctx))
		return dlq
	}
	require.Empty(t, run("first").all())
	require.Equal(t, int64(3), b.Get(customers, key(1))["n"])
	// The restart: a's change is delivered again, its agreement forgotten.
	require.Empty(t, run("again").all())
	for _, db := range []*memdb.DB{a, b} {
		require.Equal(t, int64(3), db.Get(customers, key(1))["n"], "%s: the +2 counted twice", db.Name())
	}
}

// A retry of an entry whose change was applied in part (a merge wrote the
// field that flowed and held the contested one, recording the change in
// the target's ledger) is not answered "already applied" while the held
// field is still missing: it merges again, and the row is held again.
func TestRetryOfPartlyAppliedEntryIsNotAlreadyApplied(t *testing.T) {
	t.Parallel()
	ab := mergeBed(t, nil)
	ab.seedBoth(t, 1)
	require.NoError(t, ab.a.Update(customers, key(1), duplex.Values{"name": "from a", "n": int64(7)}))
	require.NoError(t, ab.b.Update(customers, key(1), duplex.Values{"n": int64(9)}))
	// b->a waits (a is unavailable to it) until a->b has merged: else b->a
	// may merge first and carry the name to b as a write-back, and a's
	// change never reaches b's ledger.
	var released atomic.Bool
	ab.fa.fail = func(_ int, b *duplex.Batch) error {
		if b.Source == "b" && !isWriteBack(b) && !released.Load() {
			return duplex.Unavailable(errors.New("a is held until a->b merged"))
		}
		return nil
	}
	ab.run(t)
	var dl duplex.DeadLetter
	waitFor(t, func() bool {
		for _, l := range ab.dlq.all() {
			if l.Direction.From == "a" && l.Change.Key.String() == key(1).String() {
				dl = l
				return true
			}
		}
		return false
	})
	waitFor(t, func() bool { return ab.b.Get(customers, key(1))["name"] == "from a" })
	released.Store(true)
	applied, err := ab.b.Applier("duplex").Applied(t.Context(), []string{dl.Change.ID})
	require.NoError(t, err)
	require.True(t, applied[0], "the flowing field's write recorded the change in b's ledger")
	require.Equal(t, []string{"n"}, dl.Conflict.Fields)

	res, err := ab.sync.Retry(t.Context(), &dl)
	require.NoError(t, err)
	require.NotEqual(t, duplex.OutcomeAlreadyApplied, res.Outcome, "the held field n is not on b: %s", res.Detail)
	require.Equal(t, duplex.OutcomeDeadLettered, res.Outcome, res.Detail)
	require.Equal(t, int64(9), ab.b.Get(customers, key(1))["n"], "the held field stays as it is")

	// Resolved, a retry has nothing left to do.
	_, err = ab.sync.Resolve(t.Context(), &dl, "a")
	require.NoError(t, err)
	res, err = ab.sync.Retry(t.Context(), &dl)
	require.NoError(t, err)
	require.NotEqual(t, duplex.OutcomeDeadLettered, res.Outcome, res.Detail)
	requireSameRows(t, ab.a, ab.b)
}
