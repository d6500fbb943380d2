// Planning, two-way (Config.Peer): the Pipeline does not decide a change
// against the target alone, since the other direction would decide the
// crossing changes against the source alone, and the two can disagree
// about history (a field that went p->r->p on one side looks unchanged to
// the other). Instead, for each key a chunk touches, it reads the current
// row of both systems and the agreed row (the merge base, from the
// AgreementStore), merges them field by field through the same conflict
// detection and resolvers, writes the result to the target and, where the
// source lacks part of it, to the source, and records the result as the new
// agreement. A later change of either side to that key, crossing or not,
// then finds both systems equal to the agreement, or merges against it:
// merging is idempotent, so the arrival order does not matter.

package duplex

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// mergePlanner is the two-way planner: it merges, for every key of a chunk,
// both systems' rows against their agreed row, and writes the result to
// the target and, where the source lacks part of it, back to the source
// (commitAfter).
type mergePlanner struct {
	*Pipeline
	source records // the source system (Config.Peer) with its agreement records
}

// resumeAt trails at what was acknowledged: a merge commits on the target
// before its source half, so the chunk is settled only once both
// committed, and a restart merges again what a crash left half-done.
func (m *mergePlanner) resumeAt([]*item, plan) Position { return m.acked }

func (m *mergePlanner) ledgerFinal() bool { return false }
func (m *mergePlanner) merges() bool      { return true }

// lock locks the keys of items against the other direction of a Sync
// and returns the function that unlocks them.
func (m *mergePlanner) lock(items []*item) func() {
	if m.locks == nil {
		return func() {}
	}
	return m.locks.lock(keyNames(items))
}

// tryLock is lock when no key of items is locked; ok is false otherwise.
func (m *mergePlanner) tryLock(items []*item) (unlock func(), ok bool) {
	if m.locks == nil {
		return func() {}, true
	}
	return m.locks.tryLock(keyNames(items))
}

// keyNames returns the order keys of items.
func keyNames(items []*item) []string {
	names := make([]string, len(items))
	for i, it := range items {
		names[i] = it.key
	}
	return names
}

// mergeRow is what a merge plan knows about one key.
type mergeRow struct {
	target, source     Values
	targetAt, sourceAt time.Time
	onTarget, onSource Agreement // each system's agreement record
	first, last        int       // indexes of the first and last items of the key in the chunk
}

// keyMerge is one merged key with a write-back: its item, its write-back
// (index in plan.back) and the source's record (index in
// plan.agreeSource), committed together.
type keyMerge struct {
	item, back, onSource int
}

// plan plans a chunk in two-way mode: one merge per key, at the
// key's last change in the chunk (the earlier ones are settled with it).
func (m *mergePlanner) plan(items []*item) (plan, error) {
	pl := plan{items: make([]itemPlan, len(items))}
	rows := make(map[string]*mergeRow, len(items))
	var groups []tableKeys
	for i, it := range items {
		if r := rows[it.key]; r != nil {
			r.last = i
			continue
		}
		rows[it.key] = &mergeRow{first: i, last: i}
		groups = addKey(groups, it)
	}
	if vw, ok := m.cfg.Source.(VisibilityWaiter); ok {
		positions := make([]Position, 0, len(items))
		for _, it := range items {
			if !it.replay {
				positions = append(positions, it.c.Position)
			}
		}
		if err := vw.WaitVisible(m.opCtx, positions); err != nil {
			return pl, fmt.Errorf("duplex: %s: %w", m.dir, err)
		}
	}
	for _, g := range groups {
		// Both systems are read at once: the target's rows and records in
		// another goroutine, the source's in this one.
		var (
			tv   []Values
			onT  []Agreement
			terr error
			wg   sync.WaitGroup
		)
		wg.Go(func() { tv, onT, terr = m.readSide(m.target, m.dir.To, g) })
		sv, onS, err := m.readSide(m.source, m.dir.From, g)
		wg.Wait()
		if err = errors.Join(terr, err); err != nil {
			return pl, err
		}
		for i, name := range g.names {
			r := rows[name]
			r.target, r.source, r.onTarget, r.onSource = tv[i], sv[i], onT[i], onS[i]
			r.targetAt, r.sourceAt = stripTime(r.target), stripTime(r.source)
		}
	}
	// The new key of a move is merged first: its old key is deleted only
	// if the row was written under the new one (see heldMove).
	for _, moves := range []bool{true, false} {
		for i, it := range items {
			r := rows[it.key]
			if (it.c.MovedFrom != nil) != moves {
				continue
			}
			if r.last != i {
				pl.items[i].out = outNoop
				continue
			}
			if m.heldMove(i, items, &pl) {
				continue
			}
			if err := m.mergeKey(i, it, items[r.first].c, r, &pl); err != nil {
				return pl, err
			}
		}
	}
	return pl, nil
}

// heldMove reports whether items[i] is the old key's half of a move whose
// new key was held (a collision nobody decided): then the old key is not
// deleted (never delete a row whose replacement was not written) and its
// change is held too, until the new key's entry is resolved.
func (m *mergePlanner) heldMove(i int, items []*item, pl *plan) bool {
	ch := items[i].c
	if ch.MovedTo == nil || i+1 >= len(items) || items[i+1].c.MovedFrom == nil || pl.items[i+1].out != outDead {
		return false
	}
	ip := &pl.items[i]
	ip.out, ip.resolution = outDead, resolvedDeadLettered
	ip.reason = fmt.Sprintf("%s moved to %s on %s, which is held in the DLQ: %s keeps the row under %s until that entry is resolved",
		ch.Key, ch.MovedTo, m.dir.From, m.dir.To, ch.Key)
	return true
}

// readSide reads the rows of g's keys on side and their agreement records,
// checking the answers' lengths.
func (m *mergePlanner) readSide(r records, side string, g tableKeys) ([]Values, []Agreement, error) {
	vals, ags, err := r.read(m.opCtx, g.table, g.keys)
	if err != nil {
		return nil, nil, fmt.Errorf("duplex: %s: read %d rows of %s and their agreed rows on %s: %w", m.dir, len(g.keys), g.table, side, err)
	}
	if len(vals) != len(g.keys) || len(ags) != len(g.keys) {
		return nil, nil, Permanent(fmt.Errorf("duplex: %s: %s returned %d rows and %d agreed rows for %d keys of %s", m.dir, side, len(vals), len(ags), len(g.keys), g.table))
	}
	return vals, ags, nil
}

// mergeKey merges one key: the source's current row against the target's,
// with the agreed row as the base. it is the key's last change in the
// chunk, first its first (whose before image helps when no base is known).
func (m *mergePlanner) mergeKey(i int, it *item, first *Change, r *mergeRow, pl *plan) error {
	ch := it.c
	ip := &pl.items[i]
	x, y := withNewColumns(r.source, ch), r.target
	if deletedLater(it, x, y, r) {
		return nil // the deletion, later in the stream, is merged when it comes, at its own time
	}
	b := chooseBase(first, x, y, r.onTarget, r.onSource)
	syn := *ch
	syn.Before, syn.After, syn.Unchanged = b.row, x, nil
	if !r.sourceAt.IsZero() {
		syn.CommitTime = r.sourceAt
	}
	switch {
	case x == nil && b.row == nil:
		syn.Op = OpUpdate // unused: resolveMerge keeps the target's row
	case x == nil:
		syn.Op = OpDelete
	case b.row == nil:
		syn.Op = OpInsert
	default:
		syn.Op = OpUpdate
	}

	merged, held, stop, err := m.resolveMerge(i, ch, &syn, x, y, r.targetAt, b.guessed, ip, pl)
	if err != nil || stop {
		return err
	}
	if ip.out != outWrite && ip.out != outDead {
		ip.out, ip.resolution = outNoop, resolvedKeptTarget
	}
	agreedRow, unknown := withBase(merged, b.row, held)
	absorbedX, _ := withBase(x, b.row, held)
	back, hasBack := writeBack(ch, b.row, merged, x, held)
	if !hasBack && ip.out != outWrite && recordsHold(agreedRow, absorbedX, unknown, r.onTarget, r.onSource) {
		return nil // the records already give the next merge this base: nothing to write
	}
	// The target's record takes in what the merge read from the source: the
	// base of the next merge while the source's record is older. The source
	// gets a record only with a write-back (without one it holds what the
	// target's record took from it); that record commits after the
	// target's, so it is never the newer of the two, and its Peer is the
	// agreed row (stored once).
	version := max(r.onTarget.Version, r.onSource.Version) + 1
	rec := func(peer Values) Agreement {
		return Agreement{Known: true, Version: version, Row: agreedRow, Peer: peer, Unknown: unknown}
	}
	pl.agreeTarget = append(pl.agreeTarget, AgreementWrite{Table: ch.Table, Key: ch.Key, Agreement: rec(absorbedX)})
	if !hasBack {
		return nil
	}
	km := keyMerge{item: i, back: len(pl.back), onSource: len(pl.agreeSource)}
	pl.agreeSource = append(pl.agreeSource, AgreementWrite{Table: ch.Table, Key: ch.Key, Agreement: rec(agreedRow)})
	back.Change = ch.Clone()
	back.Change.ID = "" // nothing for the source's ledger: no change of the target is applied
	pl.back = append(pl.back, back)
	pl.merges = append(pl.merges, km)
	return nil
}

// resolveMerge runs detection and the resolvers on the merge's view syn of
// the source (for the change ch) against the target row y, plans the target write, and
// returns the merged row and the contested fields held on both sides.
// stop means the whole row is held (a whole-row conflict nobody decided):
// nothing is written and the agreement stays.
func (m *mergePlanner) resolveMerge(i int, ch, syn *Change, x, y Values, targetAt time.Time, guessed bool, ip *itemPlan, pl *plan) (merged Values, held map[string]bool, stop bool, err error) {
	merged = y
	if x == nil && syn.Before == nil {
		return merged, nil, false, nil // nothing on the source: the target's row, if any, stands
	}
	m.lostFields(syn, y)
	c := &m.conflict
	if !c.detectMerge(m.dir, syn, y) || c.Kind == UpdateDelete && len(c.fields) == 0 {
		return merged, nil, false, nil
	}
	c.TargetTime, c.BaseUncertain = targetAt, guessed
	if m.cfg.Resolver != nil {
		if err := m.cfg.Resolver.Resolve(m.opCtx, c); err != nil {
			return nil, nil, true, &BatchError{Index: i, Err: fmt.Errorf("resolver on %s: %w", syn, err)}
		}
	}
	ip.kind = c.Kind
	w, ok := m.decide(c, ip)
	if ip.out == outDead {
		if c.Kind == NoConflict {
			return nil, nil, true, nil
		}
		ip.info = &ConflictInfo{Kind: c.Kind, Fields: c.Conflicting(), Source: x.Clone(), Target: y.Clone(), DecidedBy: c.by,
			Base: syn.Before.Clone(), Merge: true}
		if c.Kind != UpdateUpdate || x == nil || y == nil {
			return nil, nil, true, nil
		}
		held = make(map[string]bool)
		if w, ok = m.partial(c, held); ok {
			ip.alsoDead = true
		}
	}
	if ok {
		ip.out = outWrite
		w.Change = ch
		pl.writes = append(pl.writes, w)
		pl.writeItem = append(pl.writeItem, i)
		merged = afterWrite(y, &w)
	}
	return merged, held, false, nil
}

// withNewColumns adds to the source row x the columns ch carries and x
// lacks: columns added to the source's table since its Applier last read
// the catalog. Merged like the rest, they count as schema drift when the
// target lacks them too.
func withNewColumns(x Values, ch *Change) Values {
	if x == nil || ch.After == nil {
		return x
	}
	out := x
	for f, v := range ch.After {
		if _, ok := x[f]; ok || ch.IsUnchanged(f) {
			continue
		}
		if len(out) == len(x) {
			out = x.Clone()
		}
		out[f] = v
	}
	return out
}

// partial is the write of a dead-lettered update-update conflict in a
// merge: the conflicting fields are held (recorded in held: both sides
// keep their values, the DLQ has both versions), the fields only one side
// changed still flow. It returns false when nothing is to be written to
// the target.
func (m *mergePlanner) partial(c *Conflict, held map[string]bool) (Write, bool) {
	ch, cur := c.Change, c.Current
	var b setExpect
	for i := range c.fields {
		f := &c.fields[i]
		if f.conflicting {
			held[f.name] = true
			continue
		}
		var v any
		switch f.pick {
		case Undecided, TakeSource:
			v = ch.After[f.name]
		case UseValue:
			v = f.value
		default:
			continue
		}
		if curV, ok := cur[f.name]; ok {
			b.add(f.name, v, curV)
		}
	}
	return b.update(ch)
}

// afterWrite returns row as w leaves it.
func afterWrite(row Values, w *Write) Values {
	switch w.Op {
	case OpInsert:
		return w.Set
	case OpDelete:
		return nil
	}
	next := row.Clone()
	for f, v := range w.Set {
		next[f] = v
	}
	return next
}

// writeBack returns the write that makes the source's row x equal to the
// merged row (on the fields both have), if one is needed. It expects x, so
// a source row changed since it was read is left alone (its change is on
// its way and will be merged).
func writeBack(ch *Change, base, merged, x Values, held map[string]bool) (Write, bool) {
	switch {
	case merged == nil && x == nil:
		return Write{}, false
	case merged == nil:
		return Write{Op: OpDelete, Table: ch.Table, Key: ch.Key, Expect: x}, true
	case x == nil:
		// Recreate the row with the columns the source is known to have.
		cols := base
		if cols == nil {
			cols = ch.After
		}
		if cols == nil {
			cols = ch.Before
		}
		set := make(Values, len(merged))
		for f, v := range merged {
			if _, ok := cols[f]; ok || cols == nil || isKeyColumn(ch.Key, f) {
				set[f] = v
			}
		}
		return Write{Op: OpInsert, Table: ch.Table, Key: ch.Key, Set: set}, true
	}
	var b setExpect
	for f, v := range merged {
		if cur, ok := x[f]; ok && !held[f] && !isKeyColumn(ch.Key, f) {
			b.add(f, v, cur)
		}
	}
	return b.update(ch)
}

// deletedLater reports whether the source deleted the key after it's change
// (the source has no row, the change is not a deletion, and the source does
// not report when its rows changed) while the target holds a row and the
// two sides have agreed on the key before. Merging now would date the
// deletion by it's change, the chunk's last change to the key: how a
// resolver ordered the deletion against the target's edit would depend on
// where the chunks were cut. The deletion itself comes later in the stream
// (a deletion by the sync's own write was decided against a target row that
// a later target change re-created) and is merged against the same agreed
// row, so the key is merged then. Without an agreed row the deletion's
// before image would become the base, so the merge goes on now as before
// (the source has nothing: the target's row stands). A replayed dead letter
// has no later change to wait for.
func deletedLater(it *item, x, y Values, r *mergeRow) bool {
	return x == nil && y != nil && it.c.Op != OpDelete && r.sourceAt.IsZero() && !it.replay &&
		(r.onTarget.Known || r.onSource.Known)
}
