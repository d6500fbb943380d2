package duplex_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// actionBed is a two-way sync over two memdbs whose appliers can be made to
// fail, for the operator actions.
type actionBed struct {
	a, b   *memdb.DB
	fa, fb *faultyApplier
	dlq    *deadLetters
	sync   *duplex.Sync
}

func newActionBed(t *testing.T, resolver duplex.Resolver) *actionBed {
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

func (ab *actionBed) run(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ab.sync.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	x, y := ab.sync.Pipelines()
	<-x.Ready()
	<-y.Ready()
}

// seedBoth writes the same rows on both sides with their agreement
// records, as if they had been synced.
func (ab *actionBed) seedBoth(t *testing.T, n int) {
	for _, db := range []*memdb.DB{ab.a, ab.b} {
		b := &duplex.Batch{Source: "seed"}
		for i := 1; i <= n; i++ {
			row := duplex.Values{"id": int64(i), "name": fmt.Sprint("c", i), "n": int64(i)}
			b.Writes = append(b.Writes, duplex.Write{Op: duplex.OpInsert, Table: customers, Key: key(int64(i)), Set: row})
			b.Agreements = append(b.Agreements, duplex.AgreementWrite{Table: customers, Key: key(int64(i)),
				Agreement: duplex.Agreement{Known: true, Version: 1, Row: row, Peer: row}})
		}
		require.NoError(t, db.Applier("duplex").Apply(t.Context(), b))
	}
}

func (ab *actionBed) deadLetter(t *testing.T, dir string, id int64) duplex.DeadLetter {
	t.Helper()
	var found *duplex.DeadLetter
	waitFor(t, func() bool {
		for _, dl := range ab.dlq.all() {
			if dl.Direction.String() == dir && dl.Change.Key.String() == key(id).String() {
				found = &dl
				return true
			}
		}
		return false
	})
	return *found
}

func TestSyncRetryAppliesAFixedChangeOnce(t *testing.T) {
	t.Parallel()
	ab := newActionBed(t, nil)
	ab.seedBoth(t, 10)
	ab.fb.setFail(func(_ int, b *duplex.Batch) error {
		for i, w := range b.Writes {
			if w.Key.String() == key(5).String() {
				return &duplex.BatchError{Index: i, Err: duplex.Permanent(errors.New("value rejected"))}
			}
		}
		return nil
	})
	ab.run(t)
	require.NoError(t, ab.a.Update(customers, key(5), duplex.Values{"name": "fixed later"}))
	dl := ab.deadLetter(t, "a_to_b", 5)
	require.Equal(t, duplex.ReasonPermanentError, dl.Reason)

	// Still failing: it goes back to the DLQ, the row is untouched.
	res, err := ab.sync.Retry(t.Context(), &dl)
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeDeadLettered, res.Outcome, res.Detail)
	require.Equal(t, "c5", ab.b.Get(customers, key(5))["name"])

	ab.fb.setFail(nil)
	res, err = ab.sync.Retry(t.Context(), &dl)
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeApplied, res.Outcome, res.Detail)
	require.Equal(t, "fixed later", ab.b.Get(customers, key(5))["name"])
	// Twice: the target's ledger has it.
	res, err = ab.sync.Retry(t.Context(), &dl)
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeAlreadyApplied, res.Outcome)
	require.Equal(t, 1, ab.fb.appliedIDs()[dl.Change.ID])
	// The retry's write is not echoed back to a, and a is unchanged.
	require.Equal(t, "fixed later", ab.a.Get(customers, key(5))["name"])
}

func TestSyncRetryDoesNotOverwriteNewerData(t *testing.T) {
	t.Parallel()
	ab := newActionBed(t, nil)
	ab.seedBoth(t, 10)
	block := true
	ab.fb.setFail(func(_ int, b *duplex.Batch) error {
		for i, w := range b.Writes {
			if block && w.Change.Source == "a" && w.Key.String() == key(5).String() {
				return &duplex.BatchError{Index: i, Err: duplex.Permanent(errors.New("value rejected"))}
			}
		}
		return nil
	})
	ab.run(t)
	require.NoError(t, ab.a.Update(customers, key(5), duplex.Values{"name": "old edit"}))
	dl := ab.deadLetter(t, "a_to_b", 5)
	ab.fb.setFail(nil)
	// Meanwhile someone edits the row on b.
	require.NoError(t, ab.b.Update(customers, key(5), duplex.Values{"name": "newer on b"}))
	res, err := ab.sync.Retry(t.Context(), &dl)
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeDeadLettered, res.Outcome, "an update_update conflict with no resolver: %s", res.Detail)
	require.Contains(t, res.Detail, "update_update")
	require.Equal(t, "newer on b", ab.b.Get(customers, key(5))["name"])
}

func TestSyncRetryNeedsARunningPipeline(t *testing.T) {
	t.Parallel()
	ab := newActionBed(t, nil)
	dl := duplex.DeadLetter{Sync: "pair", Direction: duplex.Direction{From: "a", To: "b"},
		Change: duplex.Change{ID: "x", Source: "a", Table: customers, Key: key(1), Op: duplex.OpDelete}}
	_, err := ab.sync.Retry(t.Context(), &dl)
	require.ErrorIs(t, err, duplex.ErrNotRunning)
	dl.Direction = duplex.Direction{From: "a", To: "c"}
	_, err = ab.sync.Retry(t.Context(), &dl)
	require.ErrorContains(t, err, "no direction a_to_c")
}

// conflictBoth makes an update_update conflict on key id with no resolver:
// both sides edit name before the sync starts.
func conflictBoth(t *testing.T, ab *actionBed, id int64) (abDL, baDL duplex.DeadLetter) {
	require.NoError(t, ab.a.Update(customers, key(id), duplex.Values{"name": "A"}))
	require.NoError(t, ab.b.Update(customers, key(id), duplex.Values{"name": "B"}))
	ab.run(t)
	return ab.deadLetter(t, "a_to_b", id), ab.deadLetter(t, "b_to_a", id)
}

func TestSyncResolveCopiesTheWinner(t *testing.T) {
	t.Parallel()
	ab := newActionBed(t, nil)
	ab.seedBoth(t, 10)
	dl, _ := conflictBoth(t, ab, 7)
	require.Equal(t, duplex.ReasonConflict, dl.Reason)

	_, err := ab.sync.Resolve(t.Context(), &dl, "c")
	require.ErrorContains(t, err, `unknown winner "c"`)

	res, err := ab.sync.Resolve(t.Context(), &dl, "a")
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeApplied, res.Outcome)
	require.Contains(t, res.Detail, "copied name from a to b")
	require.Equal(t, "A", ab.b.Get(customers, key(7))["name"])
	requireSameRows(t, ab.a, ab.b)
	// Twice: nothing more to do.
	res, err = ab.sync.Resolve(t.Context(), &dl, "a")
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeUnchanged, res.Outcome)
}

func TestSyncResolveRefusesToOverwriteNewerData(t *testing.T) {
	t.Parallel()
	ab := newActionBed(t, nil)
	ab.seedBoth(t, 10)
	dl, _ := conflictBoth(t, ab, 7)
	require.NoError(t, ab.b.Update(customers, key(7), duplex.Values{"name": "B2"}))
	_, err := ab.sync.Resolve(t.Context(), &dl, "a")
	require.ErrorIs(t, err, duplex.ErrNewerData)
	require.ErrorContains(t, err, "changed field(s) name")
	require.Equal(t, "B2", ab.b.Get(customers, key(7))["name"])
	// Choosing b (whose row is newer) is fine: a gets b's current row.
	res, err := ab.sync.Resolve(t.Context(), &dl, "b")
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeApplied, res.Outcome)
	require.Equal(t, "B2", ab.a.Get(customers, key(7))["name"])
}

func TestSyncReconcileDecidesThroughTheResolver(t *testing.T) {
	t.Parallel()
	// name: a wins; note: b wins; n: nobody decides.
	resolver := duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
		for _, f := range c.Conflicting() {
			src := c.Direction.From
			switch f {
			case "name":
				if src == "a" {
					c.Take(f, "test")
				} else {
					c.Keep(f, "test")
				}
			case "note":
				if src == "b" {
					c.Take(f, "test")
				} else {
					c.Keep(f, "test")
				}
			}
		}
		return nil
	})
	ab := newActionBed(t, resolver)
	ab.seedBoth(t, 5)
	require.NoError(t, ab.a.Update(customers, key(1), duplex.Values{"name": "a-name", "note": "a-note"}))
	require.NoError(t, ab.b.Update(customers, key(1), duplex.Values{"name": "b-name", "note": "b-note"}))
	require.NoError(t, ab.a.Update(customers, key(2), duplex.Values{"n": int64(100)}))
	require.NoError(t, ab.a.Insert(customers, duplex.Values{"id": int64(9), "name": "only a", "n": int64(9)}))
	require.NoError(t, ab.b.Insert(customers, duplex.Values{"id": int64(10), "name": "only b", "n": int64(10)}))

	ctx := t.Context()
	res, err := ab.sync.Reconcile(ctx, customers, key(1))
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeMerged, res.Outcome, res.Detail)
	want := duplex.Values{"id": int64(1), "name": "a-name", "n": int64(1), "note": "b-note"}
	require.Equal(t, want, ab.a.Get(customers, key(1)))
	require.Equal(t, want, ab.b.Get(customers, key(1)))

	res, err = ab.sync.Reconcile(ctx, customers, key(2))
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeDeadLettered, res.Outcome)
	require.Contains(t, res.Detail, "no resolver decided field(s) n")
	require.Equal(t, int64(100), ab.a.Get(customers, key(2))["n"])
	require.Equal(t, int64(2), ab.b.Get(customers, key(2))["n"])
	dls := ab.dlq.all()
	require.Len(t, dls, 1)
	require.Equal(t, duplex.ReasonConflict, dls[0].Reason)
	require.Equal(t, duplex.Values{"id": int64(2), "name": "c2", "n": int64(2), "note": nil}, dls[0].Conflict.Target)

	for _, id := range []int64{9, 10} {
		res, err = ab.sync.Reconcile(ctx, customers, key(id))
		require.NoError(t, err)
		require.Equal(t, duplex.OutcomeApplied, res.Outcome, res.Detail)
	}
	res, err = ab.sync.Reconcile(ctx, customers, key(3))
	require.NoError(t, err)
	require.Equal(t, duplex.OutcomeUnchanged, res.Outcome)

	require.NoError(t, ab.a.Update(customers, key(2), duplex.Values{"n": int64(2)}))
	requireSameRows(t, ab.a, ab.b)
}
