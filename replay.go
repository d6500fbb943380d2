// Operator actions, Pipeline side: Replay runs one dead-lettered change through the
// worker's normal path again.

package duplex

import (
	"context"
	"errors"
	"fmt"
)

// ActionResult says what an operator action (Sync.Retry, Sync.Resolve,
// Sync.Reconcile) did.
type ActionResult struct {
	// Outcome says what happened, in one word.
	Outcome Outcome `json:"outcome"`
	// Detail explains it in words, naming the table, key and fields.
	Detail string `json:"detail,omitempty"`
}

// Outcome is what an operator action did, in one word (its JSON and text
// form are the word: "applied", "merged", ...).
type Outcome string

// Outcomes of operator actions.
const (
	// OutcomeApplied: the change (or the chosen version) was written.
	OutcomeApplied Outcome = "applied"
	// OutcomeMerged: written, with some fields decided by resolvers.
	OutcomeMerged Outcome = "merged"
	// OutcomeKeptTarget: resolvers kept the target's (newer) data; nothing
	// was written.
	OutcomeKeptTarget Outcome = "kept_target"
	// OutcomeAlreadyApplied: the target's ledger shows the change applied.
	OutcomeAlreadyApplied Outcome = "already_applied"
	// OutcomeDeadLettered: it failed again or is still undecided, and is back
	// in the dead-letter queue (pending) with the new reason.
	OutcomeDeadLettered Outcome = "dead_lettered"
	// OutcomeUnchanged: there was nothing to do (the sides already agree, or
	// the change is the sync's own echo).
	OutcomeUnchanged Outcome = "unchanged"
)

var (
	// ErrNotRunning is returned by Retry when the Pipeline of the entry's
	// direction is not running: retries go through its normal path.
	ErrNotRunning = errors.New("duplex: the pipeline is not running")
	// ErrNewerData is returned by Resolve when the losing side's row changed
	// after the dead letter was recorded: nothing was written, so that newer
	// data is never overwritten by an older decision.
	ErrNewerData = errors.New("duplex: the row changed after the entry was recorded")
	// ErrKeyBusy is returned by Retry when a change to the same row is
	// waiting for an automatic retry; try again once it has settled.
	ErrKeyBusy = errors.New("duplex: a change to this row is waiting for a retry")
)

// replayError carries an outage met during a replay back to its caller
// instead of waiting it out in the worker.
type replayError struct{ err error }

func (e *replayError) Error() string { return e.err.Error() }
func (e *replayError) Unwrap() error { return e.err }

type replayReq struct {
	ctx    context.Context
	change *Change
	done   chan replayResp
}

type replayResp struct {
	res ActionResult
	err error
}

// Replay runs a dead-lettered change through the Pipeline's normal path
// again: loop guard, the target's ledger, conflict detection and the
// Resolver against the target's current row, apply. In a two-way
// Pipeline the ledger is not the last word (a change dead-lettered after a
// merge wrote part of it is in the ledger): the row is merged again, and
// OutcomeAlreadyApplied means that merge found nothing missing. It does not consult the
// Deduper (a dead-lettered change is marked settled there) and never moves
// the checkpoint or the source's acknowledged position. If the change fails
// or is dead-lettered again, it is put to the DeadLetterSink again (the
// same change ID, so a store updates its entry) and the outcome is
// OutcomeDeadLettered. An outage of the target is returned as an error.
//
// The Pipeline must be running (ErrNotRunning otherwise); the replay is
// served by its worker between batches, in order with the stream.
func (p *Pipeline) Replay(ctx context.Context, c *Change) (ActionResult, error) {
	if c == nil || c.ID == "" {
		return ActionResult{}, errors.New("duplex: Replay needs a change with an ID")
	}
	if !p.started.Load() {
		return ActionResult{}, ErrNotRunning
	}
	req := &replayReq{ctx: ctx, change: c.Clone(), done: make(chan replayResp, 1)}
	select {
	case p.replays <- req:
	case <-p.stopped:
		return ActionResult{}, ErrNotRunning
	case <-ctx.Done():
		return ActionResult{}, ctx.Err()
	}
	select {
	case r := <-req.done:
		return r.res, r.err
	case <-ctx.Done():
		// The worker finishes it anyway; its outcome lands in the DLQ or the
		// target.
		return ActionResult{}, ctx.Err()
	}
}

// serveReplay runs one replay in the worker. Only errors that must stop the
// Pipeline are returned; the caller's answer goes through req.done.
func (p *Pipeline) serveReplay(req *replayReq) error {
	res, err := p.replay(req.change)
	var re *replayError
	if errors.As(err, &re) {
		req.done <- replayResp{err: fmt.Errorf("duplex: %s: retry of %s: %w", p.dir, req.change, re.err)}
		return nil
	}
	if err != nil {
		req.done <- replayResp{err: fmt.Errorf("duplex: %s: retry of %s: %w", p.dir, req.change, err)}
		return err
	}
	req.done <- replayResp{res: res}
	return nil
}

func (p *Pipeline) replay(c *Change) (ActionResult, error) {
	what := fmt.Sprintf("%s %s %s", c.Op, c.Table, c.Key)
	if c.Source != "" && c.Source != p.dir.From {
		return ActionResult{}, Permanent(fmt.Errorf("change %s comes from %q, not this pipeline's source %q", c.ID, c.Source, p.dir.From))
	}
	it := &item{c: c, key: orderKey(c), replay: true, prev: p.acked}
	if p.parked[it.key] != nil {
		return ActionResult{}, &replayError{ErrKeyBusy}
	}
	if p.cfg.LoopGuard != nil {
		echo, err := p.cfg.LoopGuard.Echo(p.opCtx, c)
		if err != nil {
			return ActionResult{}, &replayError{err}
		}
		if echo {
			return ActionResult{Outcome: OutcomeUnchanged, Detail: what + " is the sync's own write coming back; nothing to apply"}, nil
		}
	}
	// In a two-way sync the ledger holding the change does not mean its
	// whole effect is there: a merge writes the fields that flow and holds
	// the contested ones, or its write-back to the source fails, and the
	// change is dead-lettered after its target write committed. Merging
	// again is idempotent, so a two-way retry merges, and answers "already
	// applied" only when that merge finds nothing missing.
	inLedger := false
	if p.ledger != nil {
		applied, err := p.ledger.Applied(p.opCtx, []string{c.ID})
		if err != nil {
			return ActionResult{}, &replayError{err}
		}
		inLedger = len(applied) == 1 && applied[0]
		if inLedger && p.planner.ledgerFinal() {
			return ActionResult{Outcome: OutcomeAlreadyApplied, Detail: what + " was applied to " + p.dir.To + " already"}, nil
		}
	}
	if c.Op == OpTruncate {
		if err := p.truncate(it); err != nil {
			return ActionResult{}, err
		}
	} else if err := p.runChunk([]*item{it}); err != nil {
		return ActionResult{}, err
	}
	if inLedger && it.out != outWrite && it.out != outDead {
		return ActionResult{Outcome: OutcomeAlreadyApplied, Detail: what + " was applied to " + p.dir.To + " already, and both sides hold its merge"}, nil
	}
	switch it.out {
	case outWrite:
		if it.resolution == resolvedMerged {
			return ActionResult{Outcome: OutcomeMerged, Detail: what + " applied to " + p.dir.To + ", some fields decided by resolvers"}, nil
		}
		return ActionResult{Outcome: OutcomeApplied, Detail: what + " applied to " + p.dir.To}, nil
	case outDead:
		return ActionResult{Outcome: OutcomeDeadLettered, Detail: what + " dead-lettered again: " + it.deadText}, nil
	}
	if it.resolution == resolvedKeptTarget {
		return ActionResult{Outcome: OutcomeKeptTarget, Detail: what + ": resolvers kept " + p.dir.To + "'s current data"}, nil
	}
	if c.Op == OpTruncate {
		return ActionResult{Outcome: OutcomeApplied, Detail: what + " propagated to " + p.dir.To}, nil
	}
	return ActionResult{Outcome: OutcomeUnchanged, Detail: p.dir.To + " already holds what " + what + " says"}, nil
}
