package duplex

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Two-way merging (Config.Peer): the Pipeline does not decide a change
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

// mergeRow is what a merge plan knows about one key.
type mergeRow struct {
	target, source     Values
	targetAt, sourceAt time.Time
	base               Agreement
	first, last        int // indexes of the first and last items of the key in the chunk
}

// agreed is an agreement to save once the plan's writes are done; back is
// the index of its write-back in plan.back, or -1.
type agreed struct {
	table Table
	key   Key
	item  int
	a     Agreement
	prev  Agreement
	back  int
}

// stripTime removes CommitTimeField from row and returns it.
func stripTime(row Values) time.Time {
	t, ok := row[CommitTimeField]
	if !ok {
		return time.Time{}
	}
	delete(row, CommitTimeField)
	at, _ := t.(time.Time)
	return at
}

// lookupAll reads the rows of keys from a, checking the answer's length.
func (p *Pipeline) lookupAll(a Applier, side string, t Table, keys []Key) ([]Values, error) {
	vals, err := a.Lookup(p.opCtx, t, keys)
	if err != nil {
		return nil, fmt.Errorf("duplex: %s: look up %d rows of %s on %s: %w", p.dir, len(keys), t, side, err)
	}
	if len(vals) != len(keys) {
		return nil, Permanent(fmt.Errorf("duplex: %s: lookup of %s on %s returned %d rows for %d keys", p.dir, t, side, len(vals), len(keys)))
	}
	return vals, nil
}

// makeMergePlan plans a chunk in two-way mode: one merge per key, at the
// key's last change in the chunk (the earlier ones are settled with it).
func (p *Pipeline) makeMergePlan(items []*item) (plan, error) {
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
	if vw, ok := p.cfg.Source.(VisibilityWaiter); ok {
		positions := make([]Position, 0, len(items))
		for _, it := range items {
			if !it.replay {
				positions = append(positions, it.c.Position)
			}
		}
		if err := vw.WaitVisible(p.opCtx, positions); err != nil {
			return pl, fmt.Errorf("duplex: %s: %w", p.dir, err)
		}
	}
	for _, g := range groups {
		tv, err := p.lookupAll(p.cfg.Target, p.dir.To, g.table, g.keys)
		if err != nil {
			return pl, err
		}
		sv, err := p.lookupAll(p.cfg.Peer, p.dir.From, g.table, g.keys)
		if err != nil {
			return pl, err
		}
		ag, err := p.cfg.Agreements.Load(p.opCtx, g.table, g.keys)
		if err != nil {
			return pl, fmt.Errorf("duplex: %s: load the agreed rows of %d keys of %s: %w", p.dir, len(g.keys), g.table, err)
		}
		if len(ag) != len(g.keys) {
			return pl, Permanent(fmt.Errorf("duplex: %s: agreement store returned %d rows for %d keys of %s", p.dir, len(ag), len(g.keys), g.table))
		}
		for i, name := range g.names {
			r := rows[name]
			r.target, r.source, r.base = tv[i], sv[i], ag[i]
			r.targetAt, r.sourceAt = stripTime(r.target), stripTime(r.source)
		}
	}
	for i, it := range items {
		r := rows[it.key]
		if r.last != i {
			pl.items[i].out = outNoop
			continue
		}
		if err := p.mergeKey(i, it, items[r.first].c, r, &pl); err != nil {
			return pl, err
		}
	}
	return pl, nil
}

// fallbackBase is the merge base of a key the agreement store does not
// know: the source's row before the change (the target unchanged, when the
// change carries no before image).
func fallbackBase(ch *Change, target Values) Values {
	switch {
	case ch.Op == OpInsert:
		return nil
	case ch.Before != nil:
		return ch.Before
	default:
		return target
	}
}

// mergeKey merges one key: the source's current row against the target's,
// with the agreed row as the base. it is the key's last change in the
// chunk, first its first (whose before image is the fallback base).
func (p *Pipeline) mergeKey(i int, it *item, first *Change, r *mergeRow, pl *plan) error {
	ch := it.c
	ip := &pl.items[i]
	x, y := r.source, r.target
	x = withNewColumns(x, ch)
	base := r.base.Row
	if !r.base.Known {
		base = fallbackBase(first, y)
	}
	syn := *ch
	syn.Before, syn.After, syn.Unchanged = base, x, nil
	if !r.sourceAt.IsZero() {
		syn.CommitTime = r.sourceAt
	}
	switch {
	case x == nil && base == nil:
		syn.Op = OpUpdate // unused: resolveMerge keeps the target's row
	case x == nil:
		syn.Op = OpDelete
	case base == nil:
		syn.Op = OpInsert
	default:
		syn.Op = OpUpdate
	}

	merged, held, stop, err := p.resolveMerge(i, ch, &syn, x, y, r, ip, pl)
	if err != nil || stop {
		return err
	}
	if ip.out != outWrite && ip.out != outDead {
		ip.out, ip.resolution = outNoop, "kept_target"
	}
	agreedRow := withBase(merged, base, held)
	// A held field keeps the base, and with it the doubt of a torn one.
	a := agreed{table: ch.Table, key: ch.Key, item: i, a: Agreement{Known: true, Row: agreedRow, Torn: r.base.Torn && len(held) > 0}, prev: r.base, back: -1}
	if w, ok := writeBack(ch, base, merged, x, held); ok {
		w.Change = ch.Clone()
		w.Change.ID = "" // nothing for the source's ledger: no change of the target is applied
		a.back = len(pl.back)
		pl.back = append(pl.back, w)
	}
	pl.agreed = append(pl.agreed, a)
	return nil
}

// resolveMerge runs detection and the resolvers on the merge's view syn of
// the source (for the change ch) against the target row y, plans the target write, and
// returns the merged row and the contested fields held on both sides.
// stop means the whole row is held (a whole-row conflict nobody decided):
// nothing is written and the agreement stays.
func (p *Pipeline) resolveMerge(i int, ch, syn *Change, x, y Values, r *mergeRow, ip *itemPlan, pl *plan) (merged Values, held map[string]bool, stop bool, err error) {
	merged = y
	if x == nil && syn.Before == nil {
		return merged, nil, false, nil // nothing on the source: the target's row, if any, stands
	}
	p.lostFields(syn, y)
	c := &p.conflict
	if !c.detect(p.dir, syn, y) || c.Kind == UpdateDelete && len(c.fields) == 0 {
		return merged, nil, false, nil
	}
	c.TargetTime, c.BaseUncertain = r.targetAt, r.base.Torn
	if p.cfg.Resolver != nil {
		if err := p.cfg.Resolver.Resolve(p.opCtx, c); err != nil {
			return nil, nil, true, &BatchError{Index: i, Err: fmt.Errorf("resolver on %s: %w", syn, err)}
		}
	}
	ip.kind = c.Kind
	w, ok := p.decide(c, ip)
	if ip.out == outDead {
		if c.Kind == NoConflict {
			return nil, nil, true, nil
		}
		ip.info = &ConflictInfo{Kind: c.Kind, Fields: c.Conflicting(), Source: x.Clone(), Target: y.Clone(), DecidedBy: c.by}
		if c.Kind != UpdateUpdate || x == nil || y == nil {
			return nil, nil, true, nil
		}
		held = make(map[string]bool)
		if w, ok = p.partial(c, held); ok {
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

// withBase returns merged with the held fields set back to their base
// values: they are not agreed, so the next merge still finds them
// contested.
func withBase(merged, base Values, held map[string]bool) Values {
	if len(held) == 0 {
		return merged
	}
	out := merged.Clone()
	for f := range held {
		if v, ok := base[f]; ok {
			out[f] = v
		} else {
			delete(out, f)
		}
	}
	return out
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
func (p *Pipeline) partial(c *Conflict, held map[string]bool) (Write, bool) {
	ch, cur := c.Change, c.Current
	var set, expect Values
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
		curV, ok := cur[f.name]
		if !ok || Equal(curV, v) {
			continue
		}
		if set == nil {
			set, expect = Values{}, Values{}
		}
		set[f.name], expect[f.name] = v, curV
	}
	if set == nil {
		return Write{}, false
	}
	return Write{Op: OpUpdate, Table: ch.Table, Key: ch.Key, Set: set, Expect: expect, Change: ch}, true
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
	var set, expect Values
	for f, v := range merged {
		cur, ok := x[f]
		if !ok || held[f] || isKeyColumn(ch.Key, f) || Equal(cur, v) {
			continue
		}
		if set == nil {
			set, expect = Values{}, Values{}
		}
		set[f], expect[f] = v, cur
	}
	if set == nil {
		return Write{}, false
	}
	return Write{Op: OpUpdate, Table: ch.Table, Key: ch.Key, Set: set, Expect: expect}, true
}

// plan decides a chunk: by merging in two-way mode, else against the target.
func (p *Pipeline) plan(items []*item) (plan, error) {
	if p.cfg.Peer != nil {
		return p.makeMergePlan(items)
	}
	return p.makePlan(items)
}

// lockChunk locks the keys of items against the other direction of a Sync
// and returns the function that unlocks them.
func (p *Pipeline) lockChunk(items []*item) func() {
	if p.locks == nil || p.cfg.Peer == nil {
		return func() {}
	}
	names := make([]string, len(items))
	for i, it := range items {
		names[i] = it.key
	}
	return p.locks.lock(names)
}

// finish completes a chunk whose target writes committed: in two-way mode
// it writes back to the source and saves the agreements, then it unlocks
// the keys and settles the chunk.
func (p *Pipeline) finish(items []*item, pl *plan, unlock func()) error {
	err := p.writeBackAndAgree(pl)
	unlock()
	if err != nil {
		return err
	}
	return p.settle(items, *pl)
}

// writeBackAndAgree applies pl.back to the source and saves pl.agreed. A
// write-back the source refuses as stale (its row changed since it was
// read: that change is on its way and will be merged) keeps the previous
// agreement, marked torn; one that keeps failing otherwise dead-letters its
// change, so the key is reviewed rather than left different.
func (p *Pipeline) writeBackAndAgree(pl *plan) error {
	if p.cfg.Peer == nil || len(pl.agreed) == 0 {
		return nil
	}
	var failed map[int]error
	if len(pl.back) > 0 {
		if err := p.cfg.Peer.Apply(p.opCtx, &Batch{Writes: pl.back, Source: p.dir.To}); err != nil {
			failed = make(map[int]error)
			for j := range pl.back {
				if err := p.applyBack(&pl.back[j]); err != nil {
					if p.ctx.Err() != nil && p.opCtx.Err() != nil {
						return errAborted
					}
					failed[j] = err
				}
			}
		}
	}
	saves := map[Table]*tableAgreements{}
	var order []Table
	for _, a := range pl.agreed {
		if err := failed[a.back]; a.back >= 0 && err != nil {
			prev := a.prev
			prev.Torn = true
			a.a = prev
			if !errors.Is(err, ErrStale) {
				ip := &pl.items[a.item]
				ip.out, ip.resolution = outDead, "dead_lettered"
				ip.reason = fmt.Sprintf("merged on %s, but writing the merged row back to %s failed: %v", p.dir.To, p.dir.From, err)
			} else {
				p.log.DebugContext(p.opCtx, "source changed under a write-back; its change will be merged",
					"table", a.table.String(), "key", a.key.String())
			}
		}
		if a.back < 0 && pl.items[a.item].out != outWrite && unchanged(a.prev, a.a) {
			continue // nothing written, nothing new agreed: no save
		}
		s := saves[a.table]
		if s == nil {
			s = &tableAgreements{}
			saves[a.table] = s
			order = append(order, a.table)
		}
		s.keys = append(s.keys, a.key)
		s.as = append(s.as, a.a)
	}
	for _, t := range order {
		s := saves[t]
		if err := p.cfg.Agreements.Save(p.opCtx, t, s.keys, s.as); err != nil {
			// The previous agreements stay: the next merge of these keys
			// uses an older base, which resolves again what it must.
			p.log.WarnContext(p.opCtx, "could not save agreed rows", "table", t.String(), "keys", len(s.keys), slog.Any("err", err))
		}
	}
	return nil
}

// applyBack applies one write-back, retrying transient failures.
func (p *Pipeline) applyBack(w *Write) error {
	for attempt := 1; ; attempt++ {
		err := p.cfg.Peer.Apply(p.opCtx, &Batch{Writes: []Write{*w}, Source: p.dir.To})
		if err == nil || errors.Is(err, ErrStale) || IsPermanent(err) || attempt >= p.cfg.MaxAttempts {
			return err
		}
		if !p.wait(attempt, 1, ClassOf(err), err) {
			return err
		}
	}
}

// intents returns, by table, the keys whose merge writes both systems, with
// their previous agreements marked torn (torn) or as they were.
func (pl *plan) intents(torn bool) map[Table]*tableAgreements {
	var out map[Table]*tableAgreements
	for _, a := range pl.agreed {
		if a.back < 0 || pl.items[a.item].out != outWrite {
			continue
		}
		if out == nil {
			out = make(map[Table]*tableAgreements)
		}
		ta := out[a.table]
		if ta == nil {
			ta = &tableAgreements{}
			out[a.table] = ta
		}
		prev := a.prev
		prev.Torn = prev.Torn || torn
		ta.keys = append(ta.keys, a.key)
		ta.as = append(ta.as, prev)
	}
	return out
}

type tableAgreements struct {
	keys []Key
	as   []Agreement
}

// markIntents records, before a chunk writes both systems for some keys,
// that their merge may end half-done: if the process dies between the
// target's commit and the write-back, the next merge of those keys (after
// a restart, against a durable AgreementStore) knows the earlier one was
// interrupted and dead-letters what is still contested instead of merging
// one side's change twice.
func (p *Pipeline) markIntents(pl *plan) error {
	for t, ta := range pl.intents(true) {
		if err := p.cfg.Agreements.Save(p.opCtx, t, ta.keys, ta.as); err != nil {
			return fmt.Errorf("duplex: %s: record the merge intent of %d keys of %s: %w", p.dir, len(ta.keys), t, err)
		}
	}
	return nil
}

// undoIntents restores the agreements markIntents marked, when the chunk's
// target writes did not commit. If that fails the marks stay, which only
// makes the next merge of those keys more careful.
func (p *Pipeline) undoIntents(pl *plan) {
	for t, ta := range pl.intents(false) {
		if err := p.cfg.Agreements.Save(p.opCtx, t, ta.keys, ta.as); err != nil {
			p.log.WarnContext(p.opCtx, "could not clear merge intents", "table", t.String(), "keys", len(ta.keys), slog.Any("err", err))
		}
	}
}

// unchanged reports whether agreement b says what a already says.
func unchanged(a, b Agreement) bool {
	if a.Known != b.Known || a.Torn != b.Torn || (a.Row == nil) != (b.Row == nil) || len(a.Row) != len(b.Row) {
		return false
	}
	for f, v := range a.Row {
		w, ok := b.Row[f]
		if !ok || !Equal(v, w) {
			return false
		}
	}
	return true
}
