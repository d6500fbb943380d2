// Regression tests for bugs found in package memdb while writing this suite.
// They guard memdb against their return.
package applytest_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// memdb/applier.go, Tx.apply's check: an expected field absent from the
// stored row is treated as matching (`if cv, ok := cur[f]; ok && ...`). In a
// table without TableOptions.Columns a field never written is NULL, so an
// expectation of a non-NULL value must fail with ErrStale.
func TestMemdbBugExpectOnAbsentField(t *testing.T) {
	t.Parallel()
	db := memdb.New("target")
	table := duplex.Table{Schema: "public", Name: "items"}
	require.NoError(t, db.CreateTable(table, memdb.TableOptions{Key: []string{"id"}}))
	require.NoError(t, db.Insert(table, duplex.Values{"id": int64(1), "name": "a"}))
	err := db.Applier("duplex").Apply(t.Context(), &duplex.Batch{Writes: []duplex.Write{{
		Op: duplex.OpUpdate, Table: table, Key: key(1),
		Set:    duplex.Values{"note": "sync"},
		Expect: duplex.Values{"note": "what the sync saw"},
	}}})
	require.ErrorIs(t, err, duplex.ErrStale, "the row's note is NULL, not the expected value")
}

// memdb/applier.go, Tx.apply for OpInsert: existence is checked at w.Key,
// but the row is inserted at the key found in w.Set (Tx.Insert computes it
// from the row). A Write whose Key and Set disagree inserts a row the
// Pipeline never looked at, silently.
func TestMemdbBugInsertKeyFromSet(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	err := h.Applier().Apply(t.Context(), &duplex.Batch{Writes: []duplex.Write{{
		Op: duplex.OpInsert, Table: h.table, Key: key(1),
		Set: duplex.Values{"id": int64(2), "name": "a", "n": int64(1), "note": nil},
	}}})
	if err == nil {
		require.Nil(t, h.db.Get(h.table, key(2)), "the insert of key id=1 wrote row id=2")
	}
}

// memdb/memdb.go, DB.Do: when fn panics (a TableOptions.Check that panics,
// say) the mutex is released by the deferred Unlock but the undo log is not
// run, so the writes made before the panic stay in the table, with no
// change in the log: the batch is half applied and the DB inconsistent.
func TestMemdbBugPanicLeavesHalfBatch(t *testing.T) {
	t.Parallel()
	db := memdb.New("target")
	table := duplex.Table{Schema: "public", Name: "items"}
	require.NoError(t, db.CreateTable(table, memdb.TableOptions{Key: []string{"id"}, Check: func(row duplex.Values) error {
		if row["n"] == int64(13) {
			panic(errors.New("check panicked"))
		}
		return nil
	}}))
	func() {
		defer func() { _ = recover() }()
		_ = db.Applier("duplex").Apply(t.Context(), &duplex.Batch{Writes: []duplex.Write{
			{Op: duplex.OpInsert, Table: table, Key: key(1), Set: duplex.Values{"id": int64(1), "n": int64(1)}},
			{Op: duplex.OpInsert, Table: table, Key: key(2), Set: duplex.Values{"id": int64(2), "n": int64(13)}},
		}})
	}()
	require.Nil(t, db.Get(table, key(1)), "a batch that panicked must write nothing")
}
