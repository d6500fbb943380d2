// Intake: the source's batches become ordered items; echoes, duplicates and changes the
// target's ledger holds are dropped, and the rest is cut into chunks (process).

package duplex

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/duplexsync/duplex/internal/backoff"
)

// coalesce appends to batch the batches already waiting in in, up to
// BatchSize changes, so that a backlog of small transactions is decided
// and applied in full chunks rather than one source batch at a time. It
// reports whether in is still open.
func (p *Pipeline) coalesce(batch []Change, in <-chan []Change) ([]Change, bool) {
	owned := false
	for len(batch) < p.cfg.BatchSize {
		select {
		case more, ok := <-in:
			if !ok {
				return batch, false
			}
			if len(more) == 0 {
				continue
			}
			if !owned {
				// The source's slices are read, never written to.
				batch = append(make([]Change, 0, max(p.cfg.BatchSize, len(batch)+len(more))), batch...)
				owned = true
			}
			batch = append(batch, more...)
		default:
			return batch, true
		}
	}
	return batch, true
}

// intake takes one batch from the source.
func (p *Pipeline) intake(batch []Change) error {
	items := make([]item, len(batch))
	ready := make([]*item, 0, len(batch))
	for i := range batch {
		c := &batch[i]
		it := &items[i]
		p.seq++
		it.c, it.seq, it.prev = c, p.seq, p.lastPos
		p.lastPos = c.Position
		it.key = orderKey(c)
		ready = append(ready, it)
	}
	var err error
	if ready, err = p.dropEchoes(ready); err != nil {
		return err
	}
	// A change delivered again is answered by the Deduper or the ledger
	// only once its first delivery settled.
	if err = p.landIfTouched(ready); err != nil {
		return err
	}
	ready = p.dropDuplicates(ready)
	if p.planner.ledgerFinal() {
		if ready, err = p.dropApplied(ready); err != nil {
			return err
		}
	}
	return p.process(ready)
}

func (p *Pipeline) dropEchoes(items []*item) ([]*item, error) {
	if p.cfg.LoopGuard == nil {
		return items, nil
	}
	out := items[:0]
	echoes := 0
	for _, it := range items {
		echo, err := p.cfg.LoopGuard.Echo(p.opCtx, it.c)
		if err != nil {
			if p.ctx.Err() != nil {
				return nil, errAborted
			}
			return nil, fmt.Errorf("duplex: %s: loop guard on %s: %w", p.dir, it.c, err)
		}
		if echo {
			echoes++
			p.obs.Skipped(p.opCtx, SkippedEvent{Direction: p.dir, Table: it.c.Table, Reason: SkipEcho, Count: 1})
			continue
		}
		out = append(out, it)
	}
	if echoes > 0 {
		p.log.DebugContext(p.opCtx, "dropped echoes", "count", echoes)
	}
	return out, nil
}

// dropDuplicates removes the changes delivered before: those the Deduper
// has seen, those parked for a retry, and a second copy of one change
// within the intake.
func (p *Pipeline) dropDuplicates(items []*item) []*item {
	if len(items) == 0 {
		return items
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.c.ID
	}
	var seen []bool
	if p.dedupUsable() {
		var err error
		seen, err = p.dedup.Seen(p.opCtx, ids)
		if err == nil && len(seen) != len(ids) {
			err = fmt.Errorf("deduper returned %d answers for %d ids", len(seen), len(ids))
		}
		p.dedupResult("seen", err)
		if err != nil {
			seen = nil
		}
	}
	out := items[:0]
	taken := make(map[string]struct{}, len(items)) // a change delivered twice in one intake
	for i, it := range items {
		dup := seen != nil && seen[i]
		if !dup && len(p.parkedIDs) > 0 {
			_, dup = p.parkedIDs[it.c.ID]
		}
		if !dup && it.c.ID != "" {
			_, dup = taken[it.c.ID]
			taken[it.c.ID] = struct{}{}
		}
		if dup {
			p.obs.Skipped(p.opCtx, SkippedEvent{Direction: p.dir, Table: it.c.Table, Reason: SkipDuplicate, Count: 1})
			continue
		}
		out = append(out, it)
	}
	return out
}

// dropApplied removes the changes the target's ledger says were applied
// already (a replay after a crash, or a Deduper that forgot).
func (p *Pipeline) dropApplied(items []*item) ([]*item, error) {
	if p.ledger == nil || len(items) == 0 {
		return items, nil
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.c.ID
	}
	applied, err := p.askLedger(ids)
	if err != nil {
		return nil, err
	}
	out := items[:0]
	var dups []string
	for i, it := range items {
		if applied[i] {
			dups = append(dups, it.c.ID)
			p.obs.Skipped(p.opCtx, SkippedEvent{Direction: p.dir, Table: it.c.Table, Reason: SkipDuplicate, Count: 1})
			continue
		}
		out = append(out, it)
	}
	p.mark(dups)
	return out, nil
}

// askLedger asks the target's ledger about ids, waiting out failures: the
// Pipeline must not guess whether a change was applied.
func (p *Pipeline) askLedger(ids []string) ([]bool, error) {
	for attempt := 1; ; attempt++ {
		applied, err := p.ledger.Applied(p.opCtx, ids)
		if err == nil && len(applied) == len(ids) {
			return applied, nil
		}
		if err == nil {
			err = fmt.Errorf("ledger returned %d answers for %d ids", len(applied), len(ids))
		}
		if ClassOf(err) == ClassPermanent {
			return nil, fmt.Errorf("duplex: %s: ask the target which changes were applied: %w", p.dir, err)
		}
		d := p.retry.Delay(attempt)
		p.log.WarnContext(p.opCtx, "target ledger unavailable; waiting", "attempt", attempt, "backoff", d, slog.Any("err", err))
		if !backoff.Sleep(p.ctx, d) {
			return nil, errAborted
		}
	}
}

// process applies items in order, in batches. A TRUNCATE is a barrier:
// everything before it is settled first.
func (p *Pipeline) process(items []*item) error {
	for len(items) > 0 {
		n := min(p.cfg.BatchSize, len(items))
		for i := range n {
			if items[i].c.Op == OpTruncate {
				n = i
				break
			}
		}
		if n > 0 && n < len(items) && items[n-1].c.MovedTo != nil && items[n].c.MovedFrom != nil {
			n++ // the two halves of a move are merged in one chunk
		}
		if n == 0 {
			if err := p.land(); err != nil {
				return err
			}
			if err := p.truncate(items[0]); err != nil {
				return err
			}
			items = items[1:]
			continue
		}
		if err := p.runChunkAhead(items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// orderKey identifies the row a change touches: changes with equal keys
// keep their order.
func orderKey(c *Change) string {
	// Fast path for the common single integer key: one allocation.
	if len(c.Key) == 1 {
		if v, ok := c.Key[0].Value.(int64); ok {
			var buf [96]byte
			b := append(buf[:0], c.Table.Schema...)
			b = append(b, '.')
			b = append(b, c.Table.Name...)
			b = append(b, 0)
			b = append(b, c.Key[0].Name...)
			b = append(b, '=')
			b = strconv.AppendInt(b, v, 10)
			return string(b)
		}
	}
	var b strings.Builder
	b.Grow(len(c.Table.Schema) + len(c.Table.Name) + 24)
	b.WriteString(c.Table.Schema)
	b.WriteByte('.')
	b.WriteString(c.Table.Name)
	b.WriteByte(0)
	for i, col := range c.Key {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(col.Name)
		b.WriteByte('=')
		appendValue(&b, col.Value)
	}
	return b.String()
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
