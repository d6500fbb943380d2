package e2e

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
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

// pausing holds the first Apply until released; later ones go through.
type pausing struct {
	*applypg.Applier
	first   atomic.Bool
	held    chan struct{} // closed when the first Apply waits
	release chan struct{}
}

func (p *pausing) Apply(ctx context.Context, b *duplex.Batch) error {
	if p.first.CompareAndSwap(false, true) {
		close(p.held)
		select {
		case <-p.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.Applier.Apply(ctx, b)
}

// TestActionsWaitForOnboarding: while onboarding runs, the actions that
// write agreement records (Resolve, Reconcile, ReconcileTables, a second
// Onboard) are refused with ErrOnboarding, which onboarding's own record
// writes would overwrite; once it has finished they run.
func TestActionsWaitForOnboarding(t *testing.T) {
	t.Parallel()
	ob := newOnboardBed(t, itemsDDL)
	exec(t, ob.a.Pool, `INSERT INTO items (id, name) SELECT i, 'a' || i FROM generate_series(1, 20) i`)
	exec(t, ob.b.Pool, `INSERT INTO items (id, name) SELECT i, 'b' || i FROM generate_series(1, 20) i`)
	tables := []duplex.Table{items}
	aApp, bApp := ob.appliers(t)
	p := &pausing{Applier: bApp, held: make(chan struct{}), release: make(chan struct{})}
	s := ob.sync(t, tables, resolve.DeadLetterAll(), aApp, p, 0)
	done := make(chan error, 1)
	go func() {
		_, err := s.Onboard(t.Context())
		done <- err
	}()
	<-p.held
	k := duplex.Key{{Name: "id", Value: int64(1)}}
	dl := &duplex.DeadLetter{Change: duplex.Change{Table: items, Key: k}, Direction: duplex.Direction{From: "a", To: "b"}}
	_, err := s.Resolve(t.Context(), dl, "a")
	require.ErrorIs(t, err, duplex.ErrOnboarding)
	require.ErrorContains(t, err, "resolve public.items id=1", "the error names the row")
	_, err = s.Reconcile(t.Context(), items, k)
	require.ErrorIs(t, err, duplex.ErrOnboarding)
	_, err = s.ReconcileTables(t.Context(), tables, 0)
	require.ErrorIs(t, err, duplex.ErrOnboarding)
	_, err = s.Onboard(t.Context())
	require.ErrorIs(t, err, duplex.ErrOnboarding)
	close(p.release)
	require.NoError(t, <-done)
	_, err = s.Reconcile(t.Context(), items, k)
	require.NotErrorIs(t, err, duplex.ErrOnboarding)
	_, err = s.ReconcileTables(t.Context(), tables, 0)
	require.NoError(t, err)
}
