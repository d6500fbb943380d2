// Parking: a change failing with a retryable error waits, with its key's later changes
// queued behind it, while other keys go on; retryDue tries it again after its backoff.

package duplex

import (
	"log/slog"
	"slices"
	"time"
)

// routeParked queues items whose key waits behind a failing change.
func (p *Pipeline) routeParked(items []*item) []*item {
	if len(p.parked) == 0 {
		return items
	}
	out := make([]*item, 0, len(items))
	for _, it := range items {
		if pk := p.parked[it.key]; pk != nil {
			pk.queue = append(pk.queue, it)
			p.parkedN++
			p.parkedIDs[it.c.ID] = struct{}{}
			continue
		}
		out = append(out, it)
	}
	return out
}

// failOne handles the failure of a single change: dead-letter it or park it
// for a later retry while other keys go on.
func (p *Pipeline) failOne(it *item, class ErrorClass, err error) error {
	it.attempts++
	if info, text, ok := uniqueConflict(p.dir, it.c, err, p.planner.merges()); ok {
		return p.deadLetter(it, ReasonConflict, text, info)
	}
	if class == ClassPermanent {
		return p.deadLetter(it, ReasonPermanentError, err.Error(), nil)
	}
	if it.replay || exhausted(class, it.attempts, p.cfg.MaxAttempts) {
		return p.deadLetter(it, ReasonRetriesExhausted, err.Error(), nil)
	}
	d := p.retry.Delay(it.attempts)
	p.obs.Retried(p.opCtx, RetriedEvent{Direction: p.dir, Changes: 1, Attempt: it.attempts, Class: class, Err: err, Backoff: d})
	p.log.WarnContext(p.opCtx, "change failed; parked for retry", "table", it.c.Table.String(),
		"key", it.c.Key.String(), "attempt", it.attempts, "backoff", d, slog.Any("err", err))
	pk := &park{head: it, next: p.cfg.Now().Add(d)}
	p.parked[it.key] = pk
	p.parkedN++
	p.parkedIDs[it.c.ID] = struct{}{}
	return nil
}

func (p *Pipeline) nextRetry() (time.Time, bool) {
	var next time.Time
	for _, pk := range p.parked {
		if next.IsZero() || pk.next.Before(next) {
			next = pk.next
		}
	}
	return next, !next.IsZero()
}

// retryDue retries the parked changes whose backoff has passed, oldest first,
// then releases the changes queued behind each one that settles.
func (p *Pipeline) retryDue() error {
	now := p.cfg.Now()
	var due []*park
	for _, pk := range p.parked {
		if !pk.next.After(now) {
			due = append(due, pk)
		}
	}
	slices.SortFunc(due, func(a, b *park) int { return compareSeq(a.head.seq, b.head.seq) })
	for _, pk := range due {
		key := pk.head.key
		delete(p.parked, key)
		p.parkedN -= 1 + len(pk.queue)
		delete(p.parkedIDs, pk.head.c.ID)
		for _, q := range pk.queue {
			delete(p.parkedIDs, q.c.ID)
		}
		if err := p.runChunk([]*item{pk.head}); err != nil {
			return err
		}
		if np := p.parked[key]; np != nil { // failed again: keep the queue behind it
			np.queue = append(np.queue, pk.queue...)
			p.parkedN += len(pk.queue)
			for _, q := range pk.queue {
				p.parkedIDs[q.c.ID] = struct{}{}
			}
			continue
		}
		if err := p.process(pk.queue); err != nil {
			return err
		}
	}
	return nil
}
