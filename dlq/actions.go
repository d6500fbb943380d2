package dlq

import (
	"context"

	"github.com/duplexsync/duplex"
)

// Actions carries out operator actions on the sync that produced the
// entries. The admin handler ([NewAdmin]) moves entries between statuses
// itself; Actions only touches the data.
type Actions interface {
	// Retry sends the entry's change through its direction's normal path
	// again (loop guard, ledger, resolver against the target's current row,
	// apply). If it fails again the sync puts it back into the queue, which
	// makes the entry pending again, and the outcome is
	// duplex.OutcomeDeadLettered.
	Retry(ctx context.Context, e *Entry) (duplex.ActionResult, error)
	// Resolve copies the winner's current row to the other side. winner is
	// an endpoint name (or "a"/"b"). It returns an error matching
	// duplex.ErrNewerData, and writes nothing, when the losing side's row
	// changed after the entry was recorded.
	Resolve(ctx context.Context, e *Entry, winner string) (duplex.ActionResult, error)
}

// SyncActions returns Actions for a running two-way sync: Retry and
// Resolve call s.Retry and s.Resolve with the entry's dead letter. Retry
// answers duplex.ErrNotRunning while s is not running.
func SyncActions(s *duplex.Sync) Actions { return syncActions{s} }

type syncActions struct{ s *duplex.Sync }

func (a syncActions) Retry(ctx context.Context, e *Entry) (duplex.ActionResult, error) {
	return a.s.Retry(ctx, &e.DeadLetter)
}

func (a syncActions) Resolve(ctx context.Context, e *Entry, winner string) (duplex.ActionResult, error) {
	return a.s.Resolve(ctx, &e.DeadLetter, winner)
}

// KeyActions is implemented by Actions that can keep both rows of a key
// that holds a different row on each side, giving one side's row a new
// key drawn from its sequence (SyncActions does, through
// duplex.Sync.NewKey and KeepBoth).
type KeyActions interface {
	// NewKey draws the new key for the row of side move, or says why keep
	// both does not apply (an error matching duplex.ErrNotOffered).
	NewKey(ctx context.Context, e *Entry, move string) (duplex.Key, error)
	// KeepBoth gives the row of side move the key newKey on both sides;
	// repeated with the same newKey after a failure it finishes what is
	// left and never writes a row twice.
	KeepBoth(ctx context.Context, e *Entry, move string, newKey duplex.Key) (duplex.ActionResult, error)
}

var _ KeyActions = syncActions{}

func (a syncActions) NewKey(ctx context.Context, e *Entry, move string) (duplex.Key, error) {
	return a.s.NewKey(ctx, &e.DeadLetter, move)
}

func (a syncActions) KeepBoth(ctx context.Context, e *Entry, move string, newKey duplex.Key) (duplex.ActionResult, error) {
	return a.s.KeepBoth(ctx, &e.DeadLetter, move, newKey)
}
