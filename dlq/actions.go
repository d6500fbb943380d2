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
