package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/testenv"
	"github.com/duplexsync/duplex/resolve"
)

// TestOnboardingAfterReconcileKeepsOneSidedEdit: agreement records can
// exist before the first start that streams (here a ReconcileTables, as
// pgbisync -reconcile runs). The slots exist already (a first start that
// stopped before onboarding committed a chunk), so onboarding reads the
// current rows; a is edited after the reconcile (a one-sided edit, which
// the slot captured). Onboarding reads the records, finds the key agreed
// before and leaves the edit to the stream, which merges it against the
// record: a one-sided edit is never a conflict, nor dead-lettered.
func TestOnboardingAfterReconcileKeepsOneSidedEdit(t *testing.T) {
	t.Parallel()
	ob := newOnboardBed(t, itemsDDL)
	for _, db := range []*testenv.DB{ob.a, ob.b} {
		exec(t, db.Pool, `INSERT INTO items (id, name) SELECT i, 'n' || i FROM generate_series(1, 5) i`)
	}
	tables := []duplex.Table{items}
	first := ob.sync(t, tables, resolve.DeadLetterAll(), nil, nil, 0) // creates the slots
	ps, err := first.ReconcileTables(t.Context(), tables, 0)
	require.NoError(t, err)
	require.Equal(t, int64(5), ps[0].Agreed, "%+v", ps[0])

	exec(t, ob.a.Pool, `UPDATE items SET name = 'edited on a' WHERE id = 1`)

	// The first start proper: the slots exist, so no snapshot; no
	// Pipeline checkpoint yet, no onboarding progress.
	s := ob.sync(t, tables, resolve.DeadLetterAll(), nil, nil, 0)
	_, err = s.Onboard(t.Context())
	require.NoError(t, err)
	entries, _, err := ob.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Empty(t, entries, "a key only a changed since the sides last agreed is never a conflict")
}
