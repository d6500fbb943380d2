// Applying: a chunk's plan commits on the target (and, two-way, its write-backs on the
// source); a failing chunk is retried, split to find the bad change, and that change is
// parked (retry.go) or dead-lettered.

package duplex

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/duplexsync/duplex/internal/backoff"
)

// runChunk plans and applies items (at most BatchSize) until each is
// settled or parked for a retry. A chunk in flight (ahead.go) lands first:
// runChunk commits in order behind it, and waits for locks holding none.
func (p *Pipeline) runChunk(items []*item) error {
	if err := p.land(); err != nil {
		return err
	}
	items = p.routeParked(items)
	if len(items) == 0 {
		return nil
	}
	unlock, pl, err := p.attempt(items)
	return p.conclude(items, unlock, pl, err)
}

// attempt locks the keys of items, plans them and applies the plan; the
// caller concludes the attempt.
func (p *Pipeline) attempt(items []*item) (unlock func(), pl plan, err error) {
	unlock = p.planner.lock(items)
	pl, err = p.planner.plan(items)
	if err == nil {
		err = p.applyPlan(items, pl)
	}
	return unlock, pl, err
}

// conclude settles items after an attempt whose keys unlock releases, with
// plan pl and outcome err: finished when the attempt committed, else
// attempted again, split, parked or dead-lettered as the error asks.
func (p *Pipeline) conclude(items []*item, unlock func(), pl plan, err error) error {
	attempt, stale := 0, 0
	for ; ; unlock, pl, err = p.attempt(items) {
		if err == nil {
			return p.finish(items, &pl, unlock)
		}
		if p.ctx.Err() != nil && p.opCtx.Err() != nil {
			unlock()
			return errAborted
		}
		var be *BatchError
		isBatchErr := errors.As(err, &be)
		if p.ledger != nil && len(pl.writes) > 0 && !isBatchErr && !errors.Is(err, ErrStale) && !IsPermanent(err) {
			// The outcome is unknown: the batch may have committed before the
			// error. Ask the target's ledger before trying again.
			ok, lerr := p.committed(pl)
			if lerr != nil {
				unlock()
				return lerr
			}
			if ok {
				p.log.InfoContext(p.opCtx, "batch committed despite the error", "changes", len(items), slog.Any("err", err))
				return p.finish(items, &pl, unlock)
			}
		}
		unlock()
		if errors.Is(err, ErrStale) && stale < 10 {
			stale++
			p.log.DebugContext(p.opCtx, "target changed under the batch; deciding again", "changes", len(items))
			continue
		}
		class := ClassOf(err)
		if class == ClassUnavailable && len(items) == 1 && items[0].replay {
			return &replayError{err}
		}
		if class == ClassUnavailable {
			attempt++
			if !p.wait(attempt, len(items), class, err) {
				return errAborted
			}
			continue
		}
		if len(items) == 1 {
			return p.failOne(items[0], class, err)
		}
		if isBatchErr && be.Index >= 0 && be.Index < len(items) {
			j := be.Index
			return p.runParts(items[:j], items[j:j+1], items[j+1:])
		}
		if class == ClassTransient && attempt < 2 {
			attempt++
			if !p.wait(attempt, len(items), class, err) {
				return errAborted
			}
			continue
		}
		mid := len(items) / 2
		return p.runParts(items[:mid], items[mid:])
	}
}

// applyPlan commits the target's transaction of pl, if it has anything to
// commit. A *BatchError names the item (not the write) that failed.
func (p *Pipeline) applyPlan(items []*item, pl plan) error {
	if pl.empty() {
		return nil
	}
	return p.applyBatch(p.batchOf(items, pl), pl)
}

// empty reports whether pl has nothing for the target's transaction.
func (pl *plan) empty() bool { return len(pl.writes) == 0 && len(pl.agreeTarget) == 0 }

// batchOf is the target's transaction of pl, with its checkpoint.
func (p *Pipeline) batchOf(items []*item, pl plan) *Batch {
	return &Batch{Writes: pl.writes, Agreements: pl.agreeTarget, Source: p.dir.From, Checkpoint: p.checkpoint(items, pl)}
}

// applyBatch commits b, the target's transaction of pl. It touches no
// state of the worker: it may run beside it (ahead.go).
func (p *Pipeline) applyBatch(b *Batch, pl plan) error {
	err := p.target.apply(p.opCtx, b)
	if be := (*BatchError)(nil); errors.As(err, &be) && be.Index >= 0 && be.Index < len(pl.writeItem) {
		return &BatchError{Index: pl.writeItem[be.Index], Err: be.Err}
	}
	return err
}

// runParts runs the parts of a split chunk, in order.
func (p *Pipeline) runParts(parts ...[]*item) error {
	for _, part := range parts {
		if err := p.runChunk(part); err != nil {
			return err
		}
	}
	return nil
}

// finish completes a chunk whose target transaction committed: in two-way
// mode it commits the source's side of each merge, then it unlocks the
// keys and settles the chunk.
func (p *Pipeline) finish(items []*item, pl *plan, unlock func()) error {
	err := p.planner.commitAfter(pl)
	unlock()
	if err != nil {
		return err
	}
	return p.settle(items, *pl)
}

// commitAfter commits the source's side of the chunk's merges: the
// write-backs and the source's agreement records, in one transaction. When
// that fails, each key is tried on its own. A key whose write-back the
// source refuses as stale (its row changed since it was read) keeps its
// older record: the change that moved it is on its way, and its merge takes
// the target's newer record as the base (chooseBase), so nothing the first
// merge decided is undone and nothing it took is counted twice. A key whose
// write-back keeps failing otherwise dead-letters its change.
func (m *mergePlanner) commitAfter(pl *plan) error {
	if len(pl.agreeSource) == 0 {
		return nil
	}
	if err := m.source.apply(m.opCtx, &Batch{Writes: pl.back, Agreements: pl.agreeSource, Source: m.dir.To}); err == nil {
		return nil
	}
	for _, km := range pl.merges {
		b := &Batch{Writes: pl.back[km.back : km.back+1], Agreements: pl.agreeSource[km.onSource : km.onSource+1], Source: m.dir.To}
		err := m.applyBack(b)
		switch {
		case err == nil:
		case m.ctx.Err() != nil && ClassOf(err) != ClassPermanent:
			// Stopped while waiting for the source: the chunk stays
			// unsettled and is merged again after the restart.
			return errAborted
		case errors.Is(err, ErrStale):
			w := &pl.agreeSource[km.onSource]
			m.log.DebugContext(m.opCtx, "source changed under a write-back; its change will be merged",
				"table", w.Table.String(), "key", w.Key.String())
		default:
			ip := &pl.items[km.item]
			ip.out, ip.resolution = outDead, resolvedDeadLettered
			ip.reason = fmt.Sprintf("merged on %s, but writing the merged row back to %s failed: %v", m.dir.To, m.dir.From, err)
		}
	}
	return nil
}

// applyBack applies one key's side of a merge to the source: unclassified
// failures are retried MaxAttempts times, an unavailable source or a
// transient error is waited out for as long as it lasts (or until the
// Pipeline stops): an outage never dead-letters a write-back.
func (m *mergePlanner) applyBack(b *Batch) error {
	for attempt := 1; ; attempt++ {
		err := m.source.apply(m.opCtx, b)
		if err == nil || errors.Is(err, ErrStale) {
			return err
		}
		class := ClassOf(err)
		if exhausted(class, attempt, m.cfg.MaxAttempts) {
			return err
		}
		if !m.wait(attempt, 1, class, err) {
			return err
		}
	}
}

// committed reports whether the writes of pl committed, per the ledger
// (used after an apply error whose outcome is unknown).
func (p *Pipeline) committed(pl plan) (bool, error) {
	ids := make([]string, len(pl.writes))
	for i := range pl.writes {
		ids[i] = pl.writes[i].Change.ID
	}
	applied, err := p.askLedger(ids)
	if err != nil {
		return false, err
	}
	n := 0
	for _, a := range applied {
		if a {
			n++
		}
	}
	if n > 0 && n < len(ids) {
		p.log.WarnContext(p.opCtx, "ledger shows part of a batch applied; deciding again", "applied", n, "writes", len(ids))
	}
	return n == len(ids), nil
}

// checkpoint returns the position that is safe to resume after once the
// chunk commits: the end of the chunk, unless a change before that stays
// unsettled (parked for a retry, or about to be dead-lettered).
func (p *Pipeline) checkpoint(items []*item, pl plan) Position {
	last := items[len(items)-1]
	if last.replay {
		return ""
	}
	return p.planner.resumeAt(items, pl)
}

// resumeAt is the end of the chunk, unless a change before that stays
// unsettled.
func (o oneWayPlanner) resumeAt(items []*item, pl plan) Position {
	last := items[len(items)-1]
	var first *item
	for i := range pl.items {
		if pl.items[i].out == outDead || pl.items[i].alsoDead {
			first = items[i]
			break
		}
	}
	for _, pk := range o.parked {
		if first == nil || pk.head.seq < first.seq {
			first = pk.head
		}
	}
	if first != nil && first.seq <= last.seq {
		return first.prev
	}
	return last.c.Position
}

// wait sleeps before a retry of the whole chunk; false means stop.
func (p *Pipeline) wait(attempt, n int, class ErrorClass, err error) bool {
	d := p.retry.Delay(attempt)
	p.obs.Retried(p.opCtx, RetriedEvent{Direction: p.dir, Changes: n, Attempt: attempt, Class: class, Err: err, Backoff: d})
	p.log.WarnContext(p.opCtx, "apply failed; retrying", "changes", n, "attempt", attempt,
		"class", class.String(), "backoff", d, slog.Any("err", err))
	return backoff.Sleep(p.ctx, d)
}

// exhausted reports whether a change failing attempts times with an error
// of class has used up its retries. Only unclassified errors run out:
// an outage (unavailable) or a transient error (serialization failure,
// deadlock, lock timeout) is waited out however long it lasts, holding
// back the change's key (the lag rises, /healthz says why), and never
// dead-letters; a permanent error dead-letters at once.
func exhausted(class ErrorClass, attempts, maxAttempts int) bool {
	switch class {
	case ClassUnavailable, ClassTransient:
		return false
	case ClassPermanent:
		return true
	}
	return attempts >= maxAttempts
}

// truncate settles a TRUNCATE: propagated when allowed, else dead-lettered.
func (p *Pipeline) truncate(it *item) error {
	tr, ok := p.cfg.Target.(Truncater)
	if !p.cfg.PropagateTruncate || !ok {
		return p.deadLetter(it, ReasonTruncate, fmt.Sprintf(
			"TRUNCATE of %s on %s was not propagated to %s; review and truncate by hand, or enable PropagateTruncate",
			it.c.Table, p.dir.From, p.dir.To), nil)
	}
	for attempt := 1; ; attempt++ {
		err := tr.Truncate(p.opCtx, it.c.Table, it.c)
		if err == nil {
			p.log.InfoContext(p.opCtx, "truncate propagated", "table", it.c.Table.String())
			p.mark([]string{it.c.ID})
			return nil
		}
		class := ClassOf(err)
		if class == ClassPermanent || exhausted(class, attempt, p.cfg.MaxAttempts) {
			it.attempts = attempt
			return p.deadLetter(it, ReasonTruncate, "truncate failed: "+err.Error(), nil)
		}
		if !p.wait(attempt, 1, class, err) {
			return errAborted
		}
	}
}
