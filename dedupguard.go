// The Deduper guard: intake asks the Deduper what was seen, settling marks what settled;
// a failing Deduper is left alone for a backoff while the target's ledger carries on.

package duplex

import (
	"log/slog"
	"time"
)

// dedupUsable reports whether the Deduper should be asked: after a failure
// it is left alone for a backoff period (the target's ledger and content
// checks carry on without it), so an outage does not cost every batch a
// timeout.
func (p *Pipeline) dedupUsable() bool {
	return p.dedupDownUntil.IsZero() || !p.cfg.Now().Before(p.dedupDownUntil)
}

// dedupResult records the outcome of a Deduper call: the first failure is
// logged and opens the backoff; the first success after it is logged too.
func (p *Pipeline) dedupResult(op string, err error) {
	if err == nil {
		if p.dedupFailures > 0 {
			p.log.InfoContext(p.opCtx, "deduper is back", "after_failures", p.dedupFailures)
		}
		p.dedupFailures, p.dedupDownUntil = 0, time.Time{}
		return
	}
	p.obs.DedupFailed(p.opCtx, DedupFailedEvent{Direction: p.dir, Op: op, Err: err})
	p.dedupFailures++
	d := p.retry.Delay(p.dedupFailures)
	p.dedupDownUntil = p.cfg.Now().Add(d)
	if p.dedupFailures == 1 {
		p.log.WarnContext(p.opCtx, "deduper failed; carrying on without it (the target's ledger still guards against duplicates)",
			"op", op, "retry_in", d, slog.Any("err", err))
	}
}

func (p *Pipeline) mark(ids []string) {
	if len(ids) == 0 {
		return
	}
	if !p.dedupUsable() {
		return
	}
	p.dedupResult("mark", p.dedup.Mark(p.opCtx, ids))
}
