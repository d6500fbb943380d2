// Settling: an applied chunk's outcomes become events, dead letters and dedup marks, and
// the source is acknowledged up to the first change not yet settled.

package duplex

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/duplexsync/duplex/internal/backoff"
)

// settle records the outcome of an applied chunk: dead letters, events,
// dedup marks.
func (p *Pipeline) settle(items []*item, pl plan) error {
	now := p.cfg.Now()
	type tally struct {
		table   Table
		applied int
		noop    int
		lags    []time.Duration
	}
	var tallies []tally
	at := func(t Table) *tally {
		for i := range tallies {
			if tallies[i].table == t {
				return &tallies[i]
			}
		}
		tallies = append(tallies, tally{table: t})
		return &tallies[len(tallies)-1]
	}
	ids := make([]string, 0, len(items))
	for i, it := range items {
		ip := &pl.items[i]
		it.out, it.resolution = ip.out, ip.resolution
		switch ip.out {
		case outWrite:
			t := at(it.c.Table)
			t.applied++
			if !it.c.CommitTime.IsZero() {
				t.lags = append(t.lags, now.Sub(it.c.CommitTime))
			}
			if ip.alsoDead {
				it.attempts++
				if err := p.deadLetter(it, ReasonConflict, ip.reason, ip.info); err != nil {
					return err
				}
				break
			}
			ids = append(ids, it.c.ID)
		case outNoop:
			at(it.c.Table).noop++
			ids = append(ids, it.c.ID)
		case outDead:
			it.attempts++
			if err := p.deadLetter(it, ReasonConflict, ip.reason, ip.info); err != nil {
				return err
			}
		}
		if ip.kind != NoConflict {
			p.obs.Conflicted(p.opCtx, ConflictEvent{Direction: p.dir, Table: it.c.Table, Kind: ip.kind, Resolution: ip.resolution.outcome()})
			if ip.out != outDead {
				p.log.DebugContext(p.opCtx, "conflict resolved", "table", it.c.Table.String(), "key", it.c.Key.String(),
					"kind", ip.kind.String(), "resolution", string(ip.resolution.outcome()))
			}
		}
	}
	for _, t := range tallies {
		if t.applied > 0 {
			p.obs.Applied(p.opCtx, AppliedEvent{Direction: p.dir, Table: t.table, Count: t.applied, Lags: t.lags})
		}
		if t.noop > 0 {
			p.obs.Skipped(p.opCtx, SkippedEvent{Direction: p.dir, Table: t.table, Reason: SkipNoop, Count: t.noop})
		}
	}
	p.mark(ids)
	if p.log.Enabled(p.opCtx, slog.LevelDebug) {
		p.log.DebugContext(p.opCtx, "chunk settled", "changes", len(items), "writes", len(pl.writes))
	}
	return nil
}

// deadLetter puts one change into the DLQ, retrying while the sink is
// unavailable, and settles it.
func (p *Pipeline) deadLetter(it *item, reason Reason, text string, info *ConflictInfo) error {
	it.out, it.deadText = outDead, string(reason)+": "+text
	dl := &DeadLetter{
		Sync:      p.cfg.Name,
		Direction: p.dir,
		Change:    *it.c,
		Reason:    reason,
		Error:     text,
		Attempts:  it.attempts,
		Conflict:  info,
		At:        p.cfg.Now(),
	}
	if err := p.putDeadLetter(dl); err != nil {
		return err
	}
	p.obs.DeadLettered(p.opCtx, DeadLetterEvent{Direction: p.dir, Table: it.c.Table, Reason: reason})
	p.log.WarnContext(p.opCtx, "change dead-lettered", "table", it.c.Table.String(), "key", it.c.Key.String(),
		"op", it.c.Op.String(), "reason", string(reason), "error", text)
	p.mark([]string{it.c.ID})
	return nil
}

func (p *Pipeline) putDeadLetter(dl *DeadLetter) error {
	for attempt := 1; ; attempt++ {
		err := p.cfg.DeadLetters.Put(p.opCtx, dl)
		if err == nil {
			return nil
		}
		switch ClassOf(err) {
		case ClassUnavailable, ClassTransient:
			d := p.retry.Delay(attempt)
			p.log.WarnContext(p.opCtx, "dead-letter sink failed; retrying", "attempt", attempt, "backoff", d, slog.Any("err", err))
			if !backoff.Sleep(p.ctx, d) {
				return errAborted
			}
		default:
			return fmt.Errorf("duplex: %s: dead-letter %s: %w", p.dir, dl.Change.String(), err)
		}
	}
}

// ack acknowledges the furthest position with every change up to it settled.
func (p *Pipeline) ack() {
	pos := p.lastPos
	min := p.firstInFlight()
	for _, pk := range p.parked {
		if min == nil || pk.head.seq < min.seq {
			min = pk.head
		}
	}
	if min != nil {
		pos = min.prev
	}
	if pos == "" || pos == p.acked {
		p.ackFailed = false
		return
	}
	if err := p.cfg.Source.Ack(p.opCtx, pos); err != nil {
		if !p.ackFailed {
			p.log.WarnContext(p.opCtx, "acknowledge failed; will retry", "position", string(pos), slog.Any("err", err))
		}
		p.ackFailed = true
		return
	}
	p.ackFailed = false
	p.acked = pos
	p.obs.Acked(p.opCtx, AckEvent{Direction: p.dir, Position: pos})
	p.planner.settled(pos)
}

// settled stores the settled position pos as
// the target's checkpoint when the chunks' own batches have not carried it
// for a second (they carry the position settled before them, see
// checkpoint): a restart then knows it resumes, so a lost slot is refused
// rather than created again. A failure only leaves the checkpoint further
// behind.
func (m *mergePlanner) settled(pos Position) {
	if _, ok := m.cfg.Target.(Checkpointer); !ok || m.cfg.Now().Sub(m.checkpointAt) < time.Second {
		return
	}
	m.checkpointAt = m.cfg.Now()
	if err := m.cfg.Target.Apply(m.opCtx, &Batch{Source: m.dir.From, Checkpoint: pos}); err != nil {
		m.log.DebugContext(m.opCtx, "could not record the settled position", "position", string(pos), slog.Any("err", err))
	}
}
