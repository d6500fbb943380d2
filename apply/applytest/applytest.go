package applytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/suite"
)

// Features lists what an applier supports; the suite skips the checks of
// features an applier lacks. Leaving a field false weakens the suite, so set
// every field the applier really supports.
type Features struct {
	// Checkpoints: the applier implements duplex.Checkpointer and records
	// Batch.Checkpoint in the batch's transaction.
	Checkpoints bool
	// Expectations: the applier checks Write.Expect, refuses an insert of an
	// existing key and an update of a missing row, and fails the batch with
	// duplex.ErrStale.
	Expectations bool
	// Ledger: the applier implements duplex.Ledger and records the IDs of
	// the changes it wrote in the batch's transaction.
	Ledger bool
	// Agreements: the applier implements duplex.AgreementKeeper and writes
	// Batch.Agreements in the batch's transaction.
	Agreements bool
}

// Harness pairs an applier with direct access to the table it writes.
// [NewFunc] builds one per subtest; it must be isolated from every other
// Harness (its own table, checkpoints and ledger) and clean up after itself
// with t.Cleanup.
type Harness interface {
	// Applier returns the applier under test. It may return a new instance on
	// each call, but all of them work on the same table and state. It must be
	// safe for concurrent use.
	Applier() duplex.Applier
	// Table returns the table to write: columns id (int64, the primary key),
	// name (text, not null), n (int64, not null, with a CHECK n >= 0
	// constraint) and note (nullable text), created empty for this Harness.
	Table() duplex.Table
	// Row reads the row id directly, not through the Applier: its columns
	// (NULL as a present nil), or nil when there is no such row.
	Row(ctx context.Context, id int64) (duplex.Values, error)
	// UserUpdate sets the columns in set on the existing row id, as a user of
	// the target would (not through the Applier, not as the sync).
	UserUpdate(ctx context.Context, id int64, set duplex.Values) error
}

// NewFunc returns a fresh Harness for one subtest. It registers its own
// cleanup with t.Cleanup and fails t when it cannot build the Harness.
type NewFunc func(t *testing.T) Harness

// Run runs the conformance suite for an applier with features f, as
// parallel subtests of t, each on its own Harness from newFunc.
func Run(t *testing.T, f Features, newFunc NewFunc) {
	t.Helper()
	if newFunc == nil {
		t.Fatal("applytest: nil NewFunc")
	}
	suite.Run(t, []suite.Case[*bundle]{
		{Name: "InsertLookup", Run: testInsertLookup},
		{Name: "UpdateOnlySetFields", Run: testUpdateOnlySetFields},
		{Name: "Delete", Run: testDelete},
		{Name: "BatchAtomic", Run: testBatchAtomic},
		{Name: "SameKeyTwiceInBatch", Run: testSameKeyTwiceInBatch},
		{Name: "StaleExpectation", Run: testStaleExpectation, Skip: suite.Unless(f.Expectations, "applier", "Features.Expectations")},
		{Name: "Checkpoint", Run: testCheckpoint, Skip: suite.Unless(f.Checkpoints, "applier", "Features.Checkpoints")},
		{Name: "Ledger", Run: testLedger, Skip: suite.Unless(f.Ledger, "applier", "Features.Ledger")},
		{Name: "AgreementsCommitWithWrites", Run: testAgreements, Skip: suite.Unless(f.Agreements, "applier", "Features.Agreements")},
		{Name: "NullValues", Run: testNullValues},
		{Name: "RepeatSafe", Run: testRepeatSafe},
		{Name: "CanceledContext", Run: testCanceledContext},
		{Name: "Concurrent", Run: testConcurrent},
	}, func(t *testing.T) *bundle { return setup(t, f, newFunc) })
}

// columns are the Harness table's columns.
var columns = []string{"id", "name", "n", "note"}

// bundle is what every subtest works with.
type bundle struct {
	h      Harness
	a      duplex.Applier
	f      Features
	table  duplex.Table
	source string // Batch.Source of the test's batches; unique per test
	seq    int    // last change number handed out
}

func setup(t *testing.T, f Features, newFunc NewFunc) *bundle {
	t.Helper()
	h := newFunc(t)
	require.NotNil(t, h, "NewFunc returned a nil Harness")
	a := h.Applier()
	require.NotNil(t, a, "Harness.Applier returned nil")
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	return &bundle{h: h, a: a, f: f, table: h.Table(), source: "applytest_" + hex.EncodeToString(suffix[:])}
}

func key(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }

// row returns a full row of the Harness table.
func row(id int64, name string, n int64, note any) duplex.Values {
	return duplex.Values{"id": id, "name": name, "n": n, "note": note}
}

// change returns the Change a write applies, with a fresh ID and position.
func (b *bundle) change(op duplex.Op, id int64, after duplex.Values) *duplex.Change {
	b.seq++
	return &duplex.Change{
		ID:         fmt.Sprintf("%s/%d", b.source, b.seq),
		Source:     b.source,
		Table:      b.table,
		Key:        key(id),
		Op:         op,
		After:      after.Clone(),
		CommitTime: time.Now(),
		Position:   duplex.Position(fmt.Sprintf("%020d", b.seq)),
	}
}

// insert returns an insert of a full row.
func (b *bundle) insert(id int64, name string, n int64, note any) duplex.Write {
	r := row(id, name, n, note)
	return duplex.Write{Op: duplex.OpInsert, Table: b.table, Key: key(id), Set: r, Change: b.change(duplex.OpInsert, id, r)}
}

// update returns an update of the fields in set, expecting expect (nil: no
// expectation).
func (b *bundle) update(id int64, set, expect duplex.Values) duplex.Write {
	return duplex.Write{Op: duplex.OpUpdate, Table: b.table, Key: key(id), Set: set, Expect: expect, Change: b.change(duplex.OpUpdate, id, set)}
}

// del returns a delete expecting expect (nil: no expectation).
func (b *bundle) del(id int64, expect duplex.Values) duplex.Write {
	return duplex.Write{Op: duplex.OpDelete, Table: b.table, Key: key(id), Expect: expect, Change: b.change(duplex.OpDelete, id, nil)}
}

// batch returns a batch of the test's source without a checkpoint.
func (b *bundle) batch(writes ...duplex.Write) *duplex.Batch {
	return &duplex.Batch{Writes: writes, Source: b.source}
}

// apply applies writes in one batch.
func (b *bundle) apply(ctx context.Context, writes ...duplex.Write) error {
	return b.a.Apply(ctx, b.batch(writes...))
}

// mustApply applies writes in one batch and requires success.
func (b *bundle) mustApply(t *testing.T, writes ...duplex.Write) {
	t.Helper()
	require.NoError(t, b.apply(t.Context(), writes...))
}

// requireRow checks the row id, read through the Harness: want nil means
// absent.
func (b *bundle) requireRow(t *testing.T, id int64, want duplex.Values, msg string, args ...any) {
	t.Helper()
	got, err := b.h.Row(t.Context(), id)
	require.NoError(t, err)
	requireValues(t, want, got, "%s: row id=%d", fmt.Sprintf(msg, args...), id)
}

// lookup reads rows through the Applier.
func (b *bundle) lookup(t *testing.T, ids ...int64) []duplex.Values {
	t.Helper()
	keys := make([]duplex.Key, len(ids))
	for i, id := range ids {
		keys[i] = key(id)
	}
	got, err := b.a.Lookup(t.Context(), b.table, keys)
	require.NoError(t, err)
	require.Len(t, got, len(keys), "Lookup returns one result per key")
	return got
}

// requireValues checks that got is the row want (nil: no row): the same
// columns, with equal values of the same Go types (int64, string, or nil for
// NULL).
func requireValues(t *testing.T, want, got duplex.Values, msg string, args ...any) {
	t.Helper()
	what := fmt.Sprintf(msg, args...)
	if want == nil {
		require.Nil(t, got, "%s: want no row", what)
		return
	}
	require.NotNil(t, got, "%s: want %v, got no row", what, want)
	for _, col := range columns {
		w := want[col]
		v, ok := got[col]
		require.True(t, ok, "%s: column %s missing (a NULL is a present nil); got %v", what, col, got)
		if fmt.Sprintf("%T", v) != fmt.Sprintf("%T", w) || !duplex.Equal(v, w) {
			t.Fatalf("%s: column %s is %T %#v, want %T %#v (row %v)", what, col, v, v, w, w, got)
		}
	}
	require.Len(t, got, len(columns), "%s: unexpected columns in %v", what, got)
}

// requireStale checks that err is duplex.ErrStale, with the index of the
// write when it is a BatchError.
func requireStale(t *testing.T, err error, index int, what string) {
	t.Helper()
	require.ErrorIs(t, err, duplex.ErrStale, "%s: want ErrStale", what)
	requireIndex(t, err, index, what)
}

// requireIndex checks the index of a BatchError in err's chain, if any.
func requireIndex(t *testing.T, err error, index int, what string) {
	t.Helper()
	var be *duplex.BatchError
	if errors.As(err, &be) {
		require.Equal(t, index, be.Index, "%s: BatchError.Index names the failing write (%v)", what, err)
	}
}
