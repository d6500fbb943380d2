package applytest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/agree/agreetest"
	"github.com/duplexsync/duplex/apply/applytest"
	"github.com/duplexsync/duplex/memdb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	applytest.Run(t, applytest.Features{Checkpoints: true, Expectations: true, Ledger: true, Agreements: true}, func(t *testing.T) applytest.Harness {
		return newHarness(t)
	})
}

// harness runs the suite on a memdb.DB.
type harness struct {
	db    *memdb.DB
	table duplex.Table
}

var _ applytest.Harness = (*harness)(nil)

func newHarness(t *testing.T) *harness {
	t.Helper()
	db := memdb.New("target")
	table := duplex.Table{Schema: "public", Name: "items"}
	require.NoError(t, db.CreateTable(table, memdb.TableOptions{
		Key:     []string{"id"},
		Columns: []string{"id", "name", "n", "note"},
		Check: func(row duplex.Values) error {
			if n, _ := row["n"].(int64); n < 0 {
				return errors.New("n >= 0 violated")
			}
			return nil
		},
	}))
	return &harness{db: db, table: table}
}

func (h *harness) Applier() duplex.Applier { return h.db.Applier("duplex") }

func (h *harness) Table() duplex.Table { return h.table }

func (h *harness) Row(_ context.Context, id int64) (duplex.Values, error) {
	return h.db.Get(h.table, key(id)), nil
}

func (h *harness) UserUpdate(_ context.Context, id int64, set duplex.Values) error {
	return h.db.Update(h.table, key(id), set)
}

func key(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }

// The agreement records a memdb Applier keeps pass the agreement
// conformance suite.
func TestMemdbAgreementRecordsConformance(t *testing.T) {
	t.Parallel()
	agreetest.Run(t, func(t *testing.T) duplex.AgreementStore {
		return agreetest.KeeperStore(memdb.New("m").Applier("duplex"))
	})
}
