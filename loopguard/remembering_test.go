package loopguard_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/loopguard"
	"github.com/duplexsync/duplex/memdb"
)

type bundle struct {
	db      *memdb.DB
	h       *loopguard.Hashes
	applier duplex.Applier
	seen    int // changes of db's log already handed out
}

func setup(t *testing.T) *bundle {
	t.Helper()
	db := memdb.New("b")
	require.NoError(t, db.CreateTable(customers, memdb.TableOptions{Key: []string{"id"}, Columns: []string{"id", "name", "note"}}))
	h := loopguard.NewHashes(loopguard.HashesConfig{})
	// No origin: the source cannot tell the sync's writes from users'.
	return &bundle{db: db, h: h, applier: loopguard.Remembering(db.Applier(""), h)}
}

// changes returns the changes db captured since the last call.
func (b *bundle) changes() []duplex.Change {
	all := b.db.Changes()
	out := all[b.seen:]
	b.seen = len(all)
	return out
}

// echoes runs the guard over the new changes and returns its answers.
func (b *bundle) echoes(t *testing.T) []bool {
	t.Helper()
	var out []bool
	for _, c := range b.changes() {
		out = append(out, echo(t, b.h, &c))
	}
	return out
}

func apply(t *testing.T, a duplex.Applier, ws ...duplex.Write) {
	t.Helper()
	require.NoError(t, a.Apply(t.Context(), &duplex.Batch{Writes: ws, Source: "a"}))
}

func insertW(id int64, name string) duplex.Write {
	return duplex.Write{Op: duplex.OpInsert, Table: customers, Key: key(id), Set: duplex.Values{"id": id, "name": name}}
}

func updateW(id int64, set duplex.Values) duplex.Write {
	return duplex.Write{Op: duplex.OpUpdate, Table: customers, Key: key(id), Set: set}
}

func deleteW(id int64) duplex.Write {
	return duplex.Write{Op: duplex.OpDelete, Table: customers, Key: key(id)}
}

func TestRememberingRecognisesItsWrites(t *testing.T) {
	t.Parallel()
	b := setup(t)
	apply(t, b.applier, insertW(1, "Ann"), insertW(2, "Bob"))
	require.Equal(t, []bool{true, true}, b.echoes(t))

	apply(t, b.applier, updateW(1, duplex.Values{"name": "Anne"}), deleteW(2))
	require.Equal(t, []bool{true, true}, b.echoes(t))

	// A user's edit right after the sync's goes through, and so does a
	// user's edit that brings back values the sync once wrote.
	require.NoError(t, b.db.Update(customers, key(1), duplex.Values{"note": "vip"}))
	require.NoError(t, b.db.Update(customers, key(1), duplex.Values{"note": nil}))
	require.NoError(t, b.db.Insert(customers, duplex.Values{"id": int64(2), "name": "Bob"}))
	require.Equal(t, []bool{false, false, false}, b.echoes(t))
	require.Equal(t, 0, b.h.Len())
}

func TestRememberingInterleavedUserEdits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// The user edits right after the sync: the source delivers both, in
	// commit order; only the first is the echo.
	apply(t, b.applier, insertW(1, "Ann"))
	require.NoError(t, b.db.Update(customers, key(1), duplex.Values{"name": "Annie"}))
	require.Equal(t, []bool{true, false}, b.echoes(t))

	// The user edits right before the sync, and the guard sees that change
	// only after the sync's write was remembered: the user's change passes
	// and supersedes what was remembered, so the echo passes too (the other
	// side then finds the values it has).
	require.NoError(t, b.db.Update(customers, key(1), duplex.Values{"note": "vip"}))
	apply(t, b.applier, updateW(1, duplex.Values{"name": "Ann"}))
	require.Equal(t, []bool{false, false}, b.echoes(t))
	require.Equal(t, 0, b.h.Len())
}

func TestRememberingKeyWrittenSeveralTimesInBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// As the Pipeline writes them: each update expects the values it
	// replaces, each delete the whole row. Every state has its echo.
	up := updateW(1, duplex.Values{"name": "Anne", "note": "x"})
	up.Expect = duplex.Values{"name": "Ann", "note": nil}
	del := deleteW(1)
	del.Expect = duplex.Values{"id": int64(1), "name": "Anne", "note": "x"}
	apply(t, b.applier, insertW(1, "Ann"), up, del, insertW(1, "Ann"))
	require.Equal(t, []bool{true, true, true, true}, b.echoes(t))
	require.Equal(t, 0, b.h.Len())

	// Without expectations only the final state is known: the first echo
	// is taken for a user's change, which supersedes the final state too.
	apply(t, b.applier, updateW(1, duplex.Values{"name": "Bea"}), updateW(1, duplex.Values{"name": "Cy"}))
	require.Equal(t, []bool{false, false}, b.echoes(t))

	// An update that sets a field to the value it has needs no expectation
	// for it.
	up = updateW(1, duplex.Values{"name": "Dee", "note": nil})
	up.Expect = duplex.Values{"name": "Cy"}
	up2 := updateW(1, duplex.Values{"note": "y"})
	up2.Expect = duplex.Values{"note": nil}
	apply(t, b.applier, up, up2)
	require.Equal(t, []bool{true, true}, b.echoes(t))
}

func TestRememberingFailedApply(t *testing.T) {
	t.Parallel()
	b := setup(t)
	apply(t, b.applier, insertW(1, "Ann"))
	b.echoes(t)
	err := b.applier.Apply(t.Context(), &duplex.Batch{Writes: []duplex.Write{insertW(2, "Bob"), insertW(1, "dup")}})
	require.Error(t, err)
	require.Equal(t, 0, b.h.Len(), "nothing is remembered from a failed batch")
}

func TestRememberingKeepsOptionalInterfaces(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cp, ok := b.applier.(duplex.Checkpointer)
	require.True(t, ok, "Remembering must keep the Applier's Checkpointer")
	require.NoError(t, b.applier.Apply(t.Context(), &duplex.Batch{Writes: []duplex.Write{insertW(1, "Ann")}, Source: "a", Checkpoint: "7"}))
	pos, err := cp.Checkpoint(t.Context(), "a")
	require.NoError(t, err)
	require.Equal(t, duplex.Position("7"), pos)

	interfaces := func(a duplex.Applier) [3]bool {
		_, isCP := a.(duplex.Checkpointer)
		_, isL := a.(duplex.Ledger)
		_, isT := a.(duplex.Truncater)
		return [3]bool{isCP, isL, isT}
	}
	for _, next := range []duplex.Applier{
		b.db.Applier(""), plain{}, &full{}, checkpointing{}, truncating{&full{}},
	} {
		require.Equal(t, interfaces(next), interfaces(loopguard.Remembering(next, b.h)), "%T", next)
	}
}

func TestRememberingTruncate(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{})
	f := &full{}
	a := loopguard.Remembering(f, h)
	tr, ok := a.(duplex.Truncater)
	require.True(t, ok)
	require.NoError(t, tr.Truncate(t.Context(), customers, nil))
	require.Equal(t, []duplex.Table{customers}, f.truncated)

	trunc := &duplex.Change{Table: customers, Op: duplex.OpTruncate}
	require.True(t, echo(t, h, trunc), "the sync's own TRUNCATE coming back")
	require.False(t, echo(t, h, trunc), "a user's TRUNCATE after it")

	f.err = errors.New("denied")
	require.Error(t, tr.Truncate(t.Context(), customers, nil))
	require.False(t, echo(t, h, trunc), "a failed TRUNCATE is not remembered")
}

// plain is an Applier whose Lookup returns what the test set, to play a
// user's write landing between Apply and the re-read.
type plain struct {
	rows      map[string]duplex.Values
	lookupErr error
}

func (p plain) Lookup(_ context.Context, _ duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	if p.lookupErr != nil {
		return nil, p.lookupErr
	}
	out := make([]duplex.Values, len(keys))
	for i, k := range keys {
		out[i] = p.rows[k.String()]
	}
	return out, nil
}

func (plain) Apply(context.Context, *duplex.Batch) error { return nil }

// full is an Applier with every optional interface.
type full struct {
	plain
	truncated []duplex.Table
	err       error
}

func (*full) Checkpoint(context.Context, string) (duplex.Position, error) { return "", nil }
func (*full) Applied(_ context.Context, ids []string) ([]bool, error) {
	return make([]bool, len(ids)), nil
}
func (f *full) Truncate(_ context.Context, t duplex.Table, _ *duplex.Change) error {
	if f.err != nil {
		return f.err
	}
	f.truncated = append(f.truncated, t)
	return nil
}

type checkpointing struct{ plain }

func (checkpointing) Checkpoint(context.Context, string) (duplex.Position, error) { return "", nil }

// truncating has only Truncate of the optional interfaces.
type truncating struct{ f *full }

func (t truncating) Lookup(ctx context.Context, tb duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	return t.f.Lookup(ctx, tb, keys)
}
func (t truncating) Apply(ctx context.Context, b *duplex.Batch) error { return t.f.Apply(ctx, b) }
func (t truncating) Truncate(ctx context.Context, tb duplex.Table, c *duplex.Change) error {
	return t.f.Truncate(ctx, tb, c)
}

func TestRememberingSkipsRowsChangedSince(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{})
	p := plain{rows: map[string]duplex.Values{
		"id=1": row(1, "someone else"), // disagrees with the write
		"id=2": row(2, "Bob"),          // agrees
		"id=3": row(3, "recreated"),    // deleted by the sync, then inserted again
		"id=4": {"id": int64(4), "name": "Dan", "note": nil},
	}}
	a := loopguard.Remembering(p, h)
	apply(t, a,
		updateW(1, duplex.Values{"name": "Ann"}),
		updateW(2, duplex.Values{"name": "Bob"}),
		deleteW(3),
		updateW(4, duplex.Values{"name": "Dan", "dropped_column": 1}), // a field the target lacks
	)
	require.False(t, echo(t, h, update(1, row(1, "someone else"))), "a user's row must never be remembered as the sync's")
	require.True(t, echo(t, h, update(2, row(2, "Bob"))))
	require.False(t, echo(t, h, del(3)))
	require.True(t, echo(t, h, update(4, row(4, "Dan"))))

	failing := loopguard.Remembering(plain{lookupErr: errors.New("down")}, h)
	apply(t, failing, updateW(5, duplex.Values{"name": "E"})) // the apply succeeded: no error
	require.Equal(t, 0, h.Len())
}

// slow commits, then waits to be released before returning, like an Apply
// whose commit the source captured before the call came back.
type slow struct {
	plain
	committed, release chan struct{}
}

func (s slow) Apply(context.Context, *duplex.Batch) error {
	close(s.committed)
	<-s.release
	return nil
}

func TestRememberingEchoWaitsForInflightWrite(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{})
	s := slow{
		plain:     plain{rows: map[string]duplex.Values{"id=1": row(1, "Ann")}},
		committed: make(chan struct{}),
		release:   make(chan struct{}),
	}
	a := loopguard.Remembering(s, h)
	applied := make(chan error, 1)
	go func() {
		applied <- a.Apply(t.Context(), &duplex.Batch{Writes: []duplex.Write{updateW(1, duplex.Values{"name": "Ann"})}})
	}()
	<-s.committed

	// Another row is not held up.
	require.False(t, echo(t, h, update(2, row(2, "x"))))

	// A canceled wait fails.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := h.Echo(ctx, update(1, row(1, "Ann")))
	require.ErrorIs(t, err, context.Canceled)

	// The echo of the committed write waits until it is remembered.
	res := make(chan bool, 1)
	go func() {
		ok, err := h.Echo(t.Context(), update(1, row(1, "Ann")))
		res <- err == nil && ok
	}()
	select {
	case <-res:
		t.Fatal("Echo judged a row whose write was not remembered yet")
	case <-time.After(20 * time.Millisecond):
	}
	close(s.release)
	require.NoError(t, <-applied)
	require.True(t, <-res)
}

// A polling source sees a user's edit and the sync's later write of another
// field as one change: it must pass, or the user's edit is lost.
func TestRememberingUserEditCapturedWithTheSyncsWrite(t *testing.T) {
	t.Parallel()
	b := setup(t)
	apply(t, b.applier, insertW(1, "old"))
	b.changes()
	require.NoError(t, b.db.Update(customers, key(1), duplex.Values{"name": "user edit"}))
	apply(t, b.applier, updateW(1, duplex.Values{"note": "from the sync"}))
	b.changes()
	merged := &duplex.Change{Table: customers, Key: key(1), Op: duplex.OpUpdate,
		Before: duplex.Values{"id": int64(1), "name": "old", "note": nil},
		After:  duplex.Values{"id": int64(1), "name": "user edit", "note": "from the sync"}}
	require.False(t, echo(t, b.h, merged), "the user's name edit is in it")

	// The sync's write alone, seen by a poller: an echo.
	apply(t, b.applier, updateW(1, duplex.Values{"note": "again"}))
	b.changes()
	alone := &duplex.Change{Table: customers, Key: key(1), Op: duplex.OpUpdate,
		Before: duplex.Values{"id": int64(1), "name": "user edit", "note": "from the sync"},
		After:  duplex.Values{"id": int64(1), "name": "user edit", "note": "again"}}
	require.True(t, echo(t, b.h, alone))
}
