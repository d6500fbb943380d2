package cdctest_test

import (
	"cmp"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/cdctest"
	"github.com/duplexsync/duplex/memdb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	features := cdctest.Features{
		BeforeImage:  true,
		Deletes:      true,
		Origins:      true,
		Transactions: true,
		EveryVersion: true,
		ExactResume:  true,
	}
	t.Run("DefaultBatches", func(t *testing.T) {
		t.Parallel()
		cdctest.Run(t, features, func(t *testing.T) cdctest.Harness { return newHarness(t, 0) })
	})
	// Tiny batches split transactions across calls of fn.
	t.Run("TinyBatches", func(t *testing.T) {
		t.Parallel()
		cdctest.Run(t, features, func(t *testing.T) cdctest.Harness { return newHarness(t, 3) })
	})
}

// harness runs the suite on a memdb.DB; its Sources share one slot.
type harness struct {
	db        *memdb.DB
	table     duplex.Table
	batchSize int
}

var (
	_ cdctest.Harness          = (*harness)(nil)
	_ cdctest.PositionComparer = (*harness)(nil)
)

func newHarness(t *testing.T, batchSize int) *harness {
	t.Helper()
	db := memdb.New("mem")
	table := duplex.Table{Schema: "public", Name: "items"}
	require.NoError(t, db.CreateTable(table, memdb.TableOptions{Key: []string{"id"}, Columns: []string{"id", "name", "n", "note"}}))
	return &harness{db: db, table: table, batchSize: batchSize}
}

func (h *harness) Source() duplex.ChangeSource {
	return h.db.Source(memdb.SourceConfig{Slot: "cdctest", BatchSize: h.batchSize})
}

func (h *harness) Table() duplex.Table { return h.table }

// ComparePositions orders memdb positions, which are zero-padded sequence
// numbers.
func (h *harness) ComparePositions(a, b duplex.Position) int { return cmp.Compare(a, b) }

func (h *harness) Insert(ctx context.Context, id int64, name string, n int64) error {
	return h.Tx(ctx, func(w cdctest.Writer) error { return w.Insert(ctx, id, name, n) })
}

func (h *harness) Update(ctx context.Context, id int64, set duplex.Values) error {
	return h.Tx(ctx, func(w cdctest.Writer) error { return w.Update(ctx, id, set) })
}

func (h *harness) Delete(ctx context.Context, id int64) error {
	return h.Tx(ctx, func(w cdctest.Writer) error { return w.Delete(ctx, id) })
}

func (h *harness) WriteAsOrigin(_ context.Context, origin string, id int64, name string) error {
	return h.db.Do(origin, func(tx *memdb.Tx) error { return tx.Insert(h.table, row(id, name, 0)) })
}

func (h *harness) Tx(ctx context.Context, fn func(w cdctest.Writer) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return h.db.Do("", func(tx *memdb.Tx) error { return fn(&writer{tx: tx, table: h.table}) })
}

// writer writes in one memdb transaction.
type writer struct {
	tx    *memdb.Tx
	table duplex.Table
}

func (w *writer) Insert(_ context.Context, id int64, name string, n int64) error {
	return w.tx.Insert(w.table, row(id, name, n))
}

func (w *writer) Update(_ context.Context, id int64, set duplex.Values) error {
	ok, err := w.tx.Update(w.table, key(id), set)
	if err == nil && !ok {
		err = errNoRow(id)
	}
	return err
}

func (w *writer) Delete(_ context.Context, id int64) error {
	ok, err := w.tx.Delete(w.table, key(id))
	if err == nil && !ok {
		err = errNoRow(id)
	}
	return err
}

func row(id int64, name string, n int64) duplex.Values {
	return duplex.Values{"id": id, "name": name, "n": n, "note": nil}
}

func key(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }

type errNoRow int64

func (e errNoRow) Error() string {
	return "memdb harness: no row with id " + duplex.Key{{Name: "id", Value: int64(e)}}.String()
}
