package cdctest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// testOrigin is the replication origin OriginReported writes under.
const testOrigin = "duplex_cdctest"

func testInsertUpdateDelete(t *testing.T, b *bundle) {
	ctx := t.Context()
	s := b.start(t, b.h.Source(), "")

	// One write at a time, each awaited, so a polling source sees every
	// version.
	require.NoError(t, b.h.Insert(ctx, 1, "alice", 10))
	ins := s.waitFor(1)[0]
	requireChange(t, ins, duplex.OpInsert, 1)
	require.Equal(t, b.table, ins.Table)
	require.Nil(t, ins.Before, "an insert has no before image")
	require.Empty(t, ins.Unchanged, "an insert sends every column")
	require.Empty(t, ins.Origin, "a user's write has no origin")
	requireImage(t, row(1, "alice", 10, nil), ins.After, nil, "after image of the insert")

	require.NoError(t, b.h.Update(ctx, 1, duplex.Values{"n": int64(11), "note": "hi"}))
	upd := s.waitFor(2)[1]
	requireChange(t, upd, duplex.OpUpdate, 1)
	require.Equal(t, ins.Source, upd.Source, "changes of one source carry the same Source")
	requireImage(t, row(1, "alice", 11, "hi"), upd.After, upd.Unchanged, "after image of the update")
	if b.f.BeforeImage {
		if d := beforeDiff(row(1, "alice", 10, nil), upd.Before, upd.Unchanged); d != "" {
			t.Fatalf("before image of the update: %s (before %v)", d, upd.Before)
		}
	}

	if b.f.Deletes {
		require.NoError(t, b.h.Delete(ctx, 1))
		del := s.waitFor(3)[2]
		requireChange(t, del, duplex.OpDelete, 1)
		require.Nil(t, del.After, "a delete has no after image")
		if b.f.BeforeImage {
			if d := beforeDiff(row(1, "alice", 11, "hi"), del.Before, del.Unchanged); d != "" {
				t.Fatalf("before image of the delete: %s (before %v)", d, del.Before)
			}
		}
	}
	got := s.stop()
	want := 2
	if b.f.Deletes {
		want = 3
	}
	require.Len(t, got, want, "delivered:\n%s", describe(got))
}

func testCommitOrder(t *testing.T, b *bundle) {
	const keys, rounds = 20, 5
	m := newModel(b.h)
	s := b.start(t, b.h.Source(), "")
	for i := range int64(keys) {
		m.insert(t, i+1, fmt.Sprintf("key %d", i+1), 0)
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	for r := range int64(rounds) {
		for _, i := range rng.Perm(keys) {
			m.update(t, int64(i+1), duplex.Values{"n": r + 1})
		}
	}
	if b.f.Deletes {
		for i := int64(4); i <= keys; i += 4 {
			m.delete(t, i)
		}
	}
	m.wait(s, b.f)
	got := s.stop()
	m.check(t, b.f, got)
}

func testStableIDsOnRedelivery(t *testing.T, b *bundle) {
	ctx := t.Context()
	m := newModel(b.h)
	for i := int64(1); i <= 4; i++ {
		m.insert(t, i, "row", i)
	}
	require.NoError(t, m.tx(ctx, func(w Writer) error {
		return errors.Join(w.Insert(ctx, 5, "tx", 5), w.Insert(ctx, 6, "tx", 6))
	}))
	m.insert(t, 7, "row", 7)
	if b.f.EveryVersion {
		m.update(t, 1, duplex.Values{"n": int64(100)})
		if b.f.Deletes {
			m.delete(t, 2)
		}
	}

	s1 := b.start(t, b.h.Source(), "")
	m.wait(s1, b.f)
	first := s1.stop()
	m.check(t, b.f, first)

	// Nothing was acknowledged: a restart delivers the same changes again.
	s2 := b.start(t, b.h.Source(), "")
	m.wait(s2, b.f)
	again := s2.stop()
	require.Len(t, again, len(first), "redelivered:\n%s", describe(again))
	for i := range first {
		requireSame(t, first[i], again[i], "redelivered change %d", i)
	}
}

func testResumeAfterAck(t *testing.T, b *bundle) {
	m := newModel(b.h)
	for i := int64(1); i <= 10; i++ {
		m.insert(t, i, "row", i)
	}
	src := b.h.Source()
	s1 := b.start(t, src, "")
	first := m.wait(s1, b.f)
	const k = 4
	// Ack while Stream runs, as the Pipeline does.
	require.NoError(t, src.Ack(t.Context(), first[k].Position))
	first = s1.stop()
	require.Len(t, first, 10)

	s2 := b.start(t, b.h.Source(), "")
	again := b.sentinel(t, s2)
	rest := b.checkResumed(t, first, k, again)
	require.Len(t, rest, len(first)-k-1, "delivered after the restart:\n%s", describe(again))
}

func testAckNeverSkips(t *testing.T, b *bundle) {
	ctx := t.Context()
	m := newModel(b.h)
	for i := int64(1); i <= 6; i++ {
		m.insert(t, i, "before ack", i)
	}
	src := b.h.Source()
	s1 := b.start(t, src, "")
	m.wait(s1, b.f)
	const k = 2
	require.NoError(t, src.Ack(ctx, s1.got[k].Position))
	// Delivered but never acknowledged: the source must not settle these
	// on its own (for instance by confirming the server's end of WAL).
	for i := int64(7); i <= 9; i++ {
		m.insert(t, i, "delivered, not acked", i)
	}
	m.wait(s1, b.f)
	first := s1.stop()
	require.Len(t, first, 9)
	// Written while no source runs.
	for i := int64(10); i <= 12; i++ {
		m.insert(t, i, "written while stopped", i)
	}

	s2 := b.start(t, b.h.Source(), "")
	again := b.sentinel(t, s2)
	rest := b.checkResumed(t, first, k, again)
	require.Len(t, rest, len(m.order)-k-1, "every change after the acknowledged one arrives exactly once; delivered:\n%s", describe(again))
	for i, c := range rest[len(first)-k-1:] {
		v := m.order[len(first)+i]
		if d := matches(c, v, true); d != "" {
			t.Fatalf("change written while stopped: %s (want %s)\ndelivered:\n%s", d, v, describe(again))
		}
	}
}

func testResumeFromPosition(t *testing.T, b *bundle) {
	m := newModel(b.h)
	for i := int64(1); i <= 6; i++ {
		m.insert(t, i, "row", i)
	}
	s1 := b.start(t, b.h.Source(), "")
	m.wait(s1, b.f)
	first := s1.stop()
	require.Len(t, first, 6)

	// Nothing acknowledged, but Stream is told to start after change k (as
	// the Pipeline does with a target's checkpoint): nothing at or before
	// it may be delivered, whatever Features.ExactResume says.
	const k = 2
	s2 := b.start(t, b.h.Source(), first[k].Position)
	again := b.sentinel(t, s2)
	require.Len(t, again, len(first)-k-1, "Stream(from=%s) must start after from; delivered:\n%s", first[k].Position, describe(again))
	for i, c := range again {
		requireSame(t, first[k+1+i], c, "change %d after from", i)
	}
}

func testNullVersusMissing(t *testing.T, b *bundle) {
	ctx := t.Context()
	s := b.start(t, b.h.Source(), "")

	require.NoError(t, b.h.Insert(ctx, 1, "a", 1))
	requireNull(t, s.waitFor(1)[0].After, "note", "insert with a NULL note")

	require.NoError(t, b.h.Update(ctx, 1, duplex.Values{"note": "x"}))
	c := s.waitFor(2)[1]
	requireImage(t, row(1, "a", 1, "x"), c.After, c.Unchanged, "update setting note")

	require.NoError(t, b.h.Update(ctx, 1, duplex.Values{"note": nil}))
	c = s.waitFor(3)[2]
	requireChange(t, c, duplex.OpUpdate, 1)
	require.NotContains(t, c.Unchanged, "note", "a column set to NULL is not unchanged")
	requireNull(t, c.After, "note", "update setting note to NULL")
	if b.f.BeforeImage {
		require.Contains(t, c.Before, "note")
		require.Equal(t, "x", c.Before["note"], "before image of the update setting note to NULL")
	}

	require.NoError(t, b.h.Update(ctx, 1, duplex.Values{"n": int64(2)}))
	c = s.waitFor(4)[3]
	requireNull(t, c.After, "note", "update of another column of a row whose note is NULL")
	requireImage(t, row(1, "a", 2, nil), c.After, c.Unchanged, "update of n")
	if b.f.BeforeImage {
		requireNull(t, c.Before, "note", "before image of a row whose note is NULL")
	}
	s.stop()
}

func testUnchangedNotNull(t *testing.T, b *bundle) {
	ctx := t.Context()
	// Large and incompressible, so PostgreSQL stores it out of line (TOAST)
	// and pgoutput does not resend it when it is unchanged.
	raw := make([]byte, 48<<10)
	_, _ = rand.Read(raw)
	big := base64.StdEncoding.EncodeToString(raw)

	s := b.start(t, b.h.Source(), "")
	require.NoError(t, b.h.Insert(ctx, 1, big, 1))
	ins := s.waitFor(1)[0]
	requireBig(t, ins.After, big, nil, "after image of the insert")

	require.NoError(t, b.h.Update(ctx, 1, duplex.Values{"n": int64(2)}))
	upd := s.waitFor(2)[1]
	requireChange(t, upd, duplex.OpUpdate, 1)
	require.NotContains(t, upd.Unchanged, "n", "a changed column is never unchanged")
	require.Equal(t, int64(2), upd.After["n"])
	requireNull(t, upd.After, "note", "NULL note of the update")
	requireBig(t, upd.After, big, upd.Unchanged, "after image of an update that left the large name unchanged")
	for _, col := range upd.Unchanged {
		require.NotContains(t, upd.After, col, "column %s is listed as unchanged, so it must be absent from After", col)
	}
	if b.f.BeforeImage {
		requireBig(t, upd.Before, big, upd.Unchanged, "before image of the update")
	}
	s.stop()
}

func testTransactionGrouping(t *testing.T, b *bundle) {
	ctx := t.Context()
	m := newModel(b.h)
	s := b.start(t, b.h.Source(), "")
	m.insert(t, 1, "before", 0)
	// Keys 2, 3 and 4 are written only in this transaction.
	require.NoError(t, m.tx(ctx, func(w Writer) error {
		err := errors.Join(
			w.Insert(ctx, 2, "tx", 0),
			w.Insert(ctx, 3, "tx", 0),
			w.Update(ctx, 2, duplex.Values{"n": int64(1)}),
		)
		if b.f.Deletes {
			err = errors.Join(err, w.Delete(ctx, 3))
		}
		return errors.Join(err, w.Insert(ctx, 4, "tx", 0))
	}))
	m.insert(t, 5, "after", 0)
	m.wait(s, b.f)
	got := s.stop()
	m.check(t, b.f, got)

	inTx := func(c duplex.Change) bool {
		id, _ := keyID(c.Key)
		return id >= 2 && id <= 4
	}
	start := slices.IndexFunc(got, inTx)
	require.GreaterOrEqual(t, start, 0)
	end := start
	for end < len(got) && inTx(got[end]) {
		end++
	}
	for i, c := range got {
		if i < start || i >= end {
			require.False(t, inTx(c), "the changes of one transaction arrive together; delivered:\n%s", describe(got))
		}
	}
	for _, c := range got[start:end] {
		require.True(t, c.CommitTime.Equal(got[start].CommitTime), "the changes of one transaction share its CommitTime; delivered:\n%s", describe(got))
	}
	first, _ := keyID(got[0].Key)
	last, _ := keyID(got[len(got)-1].Key)
	require.Equal(t, int64(1), first)
	require.Equal(t, int64(5), last)
}

func testRollbackNotCaptured(t *testing.T, b *bundle) {
	ctx := t.Context()
	errRollback := errors.New("cdctest: roll back")
	err := b.h.Tx(ctx, func(w Writer) error {
		if err := errors.Join(w.Insert(ctx, 1, "rolled back", 0), w.Insert(ctx, 2, "rolled back", 0)); err != nil {
			return err
		}
		return errRollback
	})
	require.ErrorIs(t, err, errRollback, "Tx returns fn's error")
	require.NoError(t, b.h.Insert(ctx, 3, "committed", 0))

	s := b.start(t, b.h.Source(), "")
	s.waitFor(1)
	got := s.stop()
	require.Len(t, got, 1, "a rolled-back transaction is never captured; delivered:\n%s", describe(got))
	requireChange(t, got[0], duplex.OpInsert, 3)
}

func testOriginReported(t *testing.T, b *bundle) {
	ctx := t.Context()
	require.NoError(t, b.h.Insert(ctx, 1, "user", 0))
	require.NoError(t, b.h.WriteAsOrigin(ctx, testOrigin, 2, "sync"))
	require.NoError(t, b.h.Insert(ctx, 3, "user", 0))

	s := b.start(t, b.h.Source(), "")
	s.waitFor(3)
	got := s.stop()
	require.Len(t, got, 3, "delivered:\n%s", describe(got))
	for i, origin := range []string{"", testOrigin, ""} {
		requireChange(t, got[i], duplex.OpInsert, int64(i+1))
		require.Equal(t, origin, got[i].Origin, "origin of %s", &got[i])
	}
	require.Equal(t, "sync", got[1].After["name"])
}

func testCancelReturnsNil(t *testing.T, b *bundle) {
	ctx := t.Context()
	nop := func(context.Context, []duplex.Change) error { return nil }

	// A context canceled before Stream starts.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.NoError(t, await(t, run(cctx, b.h.Source(), "", nop), stopTimeout, "when called with a canceled context"),
		"Stream returns nil when its context is canceled")

	// Canceled while Stream starts up (connects, opens its slot).
	cctx, cancel = context.WithCancel(ctx)
	res := run(cctx, b.h.Source(), "", nop)
	cancel()
	require.NoError(t, await(t, res, stopTimeout, "after a cancel during startup"), "Stream returns nil when its context is canceled")

	// Canceled while idle, waiting for changes: stop checks it.
	require.NoError(t, b.h.Insert(ctx, 1, "row", 1))
	s := b.start(t, b.h.Source(), "")
	s.waitFor(1)
	s.stop()

	// Canceled while fn is blocked; fn then returns the cancel cause, as the
	// Pipeline's fn does.
	errStopped := errors.New("cdctest: stopped")
	cctx, cancelCause := context.WithCancelCause(ctx)
	entered := make(chan struct{})
	var once sync.Once
	res = run(cctx, b.h.Source(), "", func(ctx context.Context, _ []duplex.Change) error {
		once.Do(func() { close(entered) })
		<-ctx.Done()
		return context.Cause(ctx)
	})
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case <-entered:
	case err := <-res:
		t.Fatalf("Stream returned %v before delivering anything", err)
	case <-timer.C:
		t.Fatalf("Stream did not deliver within %v", waitTimeout)
	}
	cancelCause(errStopped)
	require.NoError(t, await(t, res, stopTimeout, "after a cancel while fn was blocked"),
		"Stream returns nil when its context is canceled, even when fn returns the cancel cause")
}

func testFnErrorStops(t *testing.T, b *bundle) {
	ctx := t.Context()
	m := newModel(b.h)
	for i := int64(1); i <= 3; i++ {
		m.insert(t, i, "row", i)
	}
	errBoom := errors.New("cdctest: fn failed")
	var calls atomic.Int32
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := run(cctx, b.h.Source(), "", func(context.Context, []duplex.Change) error {
		calls.Add(1)
		return fmt.Errorf("applying: %w", errBoom)
	})
	err := await(t, res, waitTimeout, "after fn returned an error")
	require.ErrorIs(t, err, errBoom, "Stream returns fn's error")
	require.Equal(t, int32(1), calls.Load(), "Stream does not call fn again after it failed")

	// Nothing was acknowledged: a restart delivers everything again.
	s := b.start(t, b.h.Source(), "")
	m.wait(s, b.f)
	m.check(t, b.f, s.stop())
}

func testIDsUnique(t *testing.T, b *bundle) {
	ctx := t.Context()
	m := newModel(b.h)
	s := b.start(t, b.h.Source(), "")
	for i := int64(1); i <= 10; i++ {
		m.insert(t, i, "row", 0)
	}
	// Many changes in one transaction.
	require.NoError(t, m.tx(ctx, func(w Writer) error {
		var err error
		for i := int64(1); i <= 10; i++ {
			err = errors.Join(err, w.Update(ctx, i, duplex.Values{"n": int64(1)}))
		}
		return err
	}))
	// One key, again and again; twice in one transaction.
	for n := int64(2); n <= 4; n++ {
		m.update(t, 1, duplex.Values{"n": n})
	}
	require.NoError(t, m.tx(ctx, func(w Writer) error {
		return errors.Join(w.Update(ctx, 2, duplex.Values{"n": int64(5)}), w.Update(ctx, 2, duplex.Values{"n": int64(6)}))
	}))
	if b.f.Deletes {
		m.delete(t, 3)
		m.insert(t, 3, "again", 0)
	}
	m.wait(s, b.f)
	got := s.stop()
	m.check(t, b.f, got)

	ids := make(map[string]int, len(got))
	for i, c := range got {
		if j, dup := ids[c.ID]; dup {
			t.Fatalf("changes %d (%s) and %d (%s) share the ID %q", j, &got[j], i, &c, c.ID)
		}
		ids[c.ID] = i
		require.Equal(t, got[0].Source, c.Source, "changes of one source carry the same Source")
	}
}

func testLargeBatchBounded(t *testing.T, b *bundle) {
	const txs, perTx = 10, 1000
	ctx := t.Context()
	m := newModel(b.h)
	s := b.start(t, b.h.Source(), "")
	for x := range int64(txs) {
		require.NoError(t, m.tx(ctx, func(w Writer) error {
			for j := range int64(perTx) {
				id := x*perTx + j + 1
				if err := w.Insert(ctx, id, "bulk", id); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	m.wait(s, b.f, largeTimeout)
	got := s.stop()
	m.check(t, b.f, got)
	t.Logf("%d changes in %d batches, the largest of %d", len(got), len(s.received), s.maxBatch)

	if b.f.Transactions && b.f.EveryVersion {
		// got[i] is m.order[i]: the changes of each transaction share its
		// CommitTime, even when it spans several batches.
		for i := 1; i < len(got); i++ {
			if m.order[i].tx == m.order[i-1].tx {
				require.True(t, got[i].CommitTime.Equal(got[i-1].CommitTime),
					"changes %d and %d are in one transaction but have different commit times", i-1, i)
			}
		}
	}
}

// sentinelID is the id of the row sentinel inserts.
const sentinelID = 1_000_000

// sentinel inserts a sentinel row and waits for its change: changes arrive
// in commit order, so every change committed before it has then arrived
// too, and a lost change is reported at once rather than after a timeout.
// It stops s and returns the changes delivered before the sentinel's.
func (b *bundle) sentinel(t *testing.T, s *stream) []duplex.Change {
	t.Helper()
	isSentinel := func(c duplex.Change) bool {
		id, _ := keyID(c.Key)
		return id == sentinelID
	}
	require.NoError(t, b.h.Insert(t.Context(), sentinelID, "sentinel", 0))
	s.waitUntil(waitTimeout, "the sentinel row", func(got []duplex.Change) bool {
		return slices.ContainsFunc(got, isSentinel)
	})
	got := s.stop()
	return got[:slices.IndexFunc(got, isSentinel)]
}

// checkResumed checks what a restarted Stream delivered (again) against
// what the first one delivered (first), whose change k was acknowledged:
// every change after k is delivered again, in order, with the same ID and
// position; changes at or before k may come again (they must then be the
// same) only without Features.ExactResume; nothing is delivered twice. It
// returns the changes of again that come after k.
func (b *bundle) checkResumed(t *testing.T, first []duplex.Change, k int, again []duplex.Change) []duplex.Change {
	t.Helper()
	settled := make(map[string]duplex.Change, k+1)
	for _, c := range first[:k+1] {
		settled[c.ID] = c
	}
	seen := make(map[string]bool, len(again))
	for _, c := range again {
		require.False(t, seen[c.ID], "change %s delivered twice by one Stream; delivered:\n%s", &c, describe(again))
		seen[c.ID] = true
		if old, ok := settled[c.ID]; ok {
			require.False(t, b.f.ExactResume, "change %s at or before the acknowledged position %s was delivered again; delivered:\n%s",
				&c, first[k].Position, describe(again))
			requireSame(t, old, c, "redelivered settled change")
		}
	}
	rest := b.afterResume(first, k, again)
	want := first[k+1:]
	require.GreaterOrEqual(t, len(rest), len(want), "changes after the acknowledged position were lost; delivered:\n%s", describe(again))
	for i := range want {
		requireSame(t, want[i], rest[i], "change %d after the acknowledged position", i)
	}
	return rest
}

// afterResume returns the changes of again that are not first[:k+1].
func (b *bundle) afterResume(first []duplex.Change, k int, again []duplex.Change) []duplex.Change {
	settled := make(map[string]bool, k+1)
	for _, c := range first[:k+1] {
		settled[c.ID] = true
	}
	var rest []duplex.Change
	for _, c := range again {
		if !settled[c.ID] {
			rest = append(rest, c)
		}
	}
	return rest
}

// row returns the Harness table's row.
func row(id int64, name string, n int64, note any) duplex.Values {
	return duplex.Values{"id": id, "name": name, "n": n, "note": note}
}

// requireChange checks c's op and key.
func requireChange(t *testing.T, c duplex.Change, op duplex.Op, id int64) {
	t.Helper()
	require.Equal(t, op, c.Op, "op of %s", &c)
	got, ok := keyID(c.Key)
	require.True(t, ok, "key of %s: want a single int64 column id", &c)
	require.Equal(t, id, got, "key of %s", &c)
}

// requireNull checks that image holds col as NULL: present, with nil.
func requireNull(t *testing.T, image duplex.Values, col, what string) {
	t.Helper()
	v, ok := image[col]
	require.True(t, ok, "%s: NULL column %s must be present with a nil value, not missing (image %v)", what, col, image)
	require.Nil(t, v, "%s: column %s", what, col)
}

// requireBig checks that image holds name == big, or leaves it out when it
// is listed in unchanged; never NULL.
func requireBig(t *testing.T, image duplex.Values, big string, unchanged []string, what string) {
	t.Helper()
	v, ok := image["name"]
	if !ok {
		require.Contains(t, unchanged, "name", "%s: column name is missing but not listed in Change.Unchanged", what)
		return
	}
	require.NotNil(t, v, "%s: an unchanged value must not be reported as NULL", what)
	s, isString := v.(string)
	require.True(t, isString, "%s: name is %T, want string", what, v)
	require.True(t, s == big, "%s: name has %d bytes, want the %d written", what, len(s), len(big))
}

// requireSame checks that got is the same change as want: same ID,
// position, content and commit time.
func requireSame(t *testing.T, want, got duplex.Change, msg string, args ...any) {
	t.Helper()
	what := fmt.Sprintf(msg, args...)
	require.True(t, want.CommitTime.Equal(got.CommitTime), "%s: commit time %v, want %v", what, got.CommitTime, want.CommitTime)
	want.CommitTime, got.CommitTime = time.Time{}, time.Time{}
	require.Equal(t, want, got, "%s: the same change must keep its ID, position and content", what)
}
