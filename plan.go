// Planning: a planner turns one chunk into a plan: the writes and, per item, its outcome.
// The one-way planner here reads the target's rows and decides each change in order
// against them; merge.go holds the two-way planner.

package duplex

import (
	"fmt"
	"time"
)

// planner is the stage in which a one-way and a two-way Pipeline differ,
// chosen once by NewPipeline: oneWayPlanner decides each change against the
// target's row, mergePlanner (merge.go) merges both systems' rows against
// their agreed row. The rest of the Pipeline is the same for both.
type planner interface {
	// lock locks the keys of a chunk against the other direction of a
	// Sync and returns the function that unlocks them.
	lock(items []*item) (unlock func())
	// tryLock is lock when none of the keys is locked; ok is false
	// (nothing locked) otherwise.
	tryLock(items []*item) (unlock func(), ok bool)
	// plan reads what the chunk needs and decides every item.
	plan(items []*item) (plan, error)
	// commitAfter commits what must follow the target's transaction of a
	// plan (a merge's write-backs to the source) before the chunk settles.
	commitAfter(pl *plan) error
	// resumeAt returns the position the target's transaction of a chunk
	// records as its checkpoint (not called for replays).
	resumeAt(items []*item, pl plan) Position
	// settled is told of every position acknowledged to the source.
	settled(pos Position)
	// ledgerFinal reports whether a change the target's ledger holds has
	// had its whole effect: true one-way; false two-way, where a merge may
	// still owe a write-back to the source (a crash in between) and merging
	// again is idempotent.
	ledgerFinal() bool
	// merges reports whether the chunks are merged with the other
	// direction's (a Sync's): the two directions' dead letters of one
	// collision are one entry.
	merges() bool
}

// oneWayPlanner decides each change of a chunk, in order, against the
// target's current row, with the change's before image as the base.
type oneWayPlanner struct{ *Pipeline }

func (oneWayPlanner) lock([]*item) func()            { return func() {} }
func (oneWayPlanner) tryLock([]*item) (func(), bool) { return func() {}, true }
func (oneWayPlanner) commitAfter(*plan) error        { return nil }
func (oneWayPlanner) settled(Position)               {}
func (oneWayPlanner) ledgerFinal() bool              { return true }
func (oneWayPlanner) merges() bool                   { return false }

type outcome uint8

const (
	outNoop outcome = iota
	outWrite
	outDead
)

// resolution is how a conflict ended, as ConflictEvent.Resolution and the
// operator's outcomes name it.
type resolution uint8

const (
	resolvedNone resolution = iota
	resolvedApplied
	resolvedMerged
	resolvedKeptTarget
	resolvedDeadLettered
)

// outcome is r as ConflictEvent.Resolution and operator actions name it.
func (r resolution) outcome() Outcome {
	switch r {
	case resolvedApplied:
		return OutcomeApplied
	case resolvedMerged:
		return OutcomeMerged
	case resolvedKeptTarget:
		return OutcomeKeptTarget
	case resolvedDeadLettered:
		return OutcomeDeadLettered
	}
	return ""
}

type itemPlan struct {
	out        outcome
	alsoDead   bool // written in part (a merge's flowing fields) and dead-lettered for the rest
	kind       ConflictKind
	resolution resolution
	reason     string
	info       *ConflictInfo
}

// dead plans the item's dead-lettering for reason.
func (ip *itemPlan) dead(reason string) (Write, bool) {
	ip.out, ip.reason, ip.resolution = outDead, reason, resolvedDeadLettered
	return Write{}, false
}

// noop plans the item to keep the target's row as it is.
func (ip *itemPlan) noop() (Write, bool) {
	ip.out, ip.resolution = outNoop, resolvedKeptTarget
	return Write{}, false
}

type plan struct {
	writes    []Write
	writeItem []int // index in items of each write
	items     []itemPlan
	// Two-way: the records committed with writes on the target, and the
	// source's side of each merge (write-backs and records), committed next.
	agreeTarget []AgreementWrite
	back        []Write
	agreeSource []AgreementWrite
	merges      []keyMerge
}

type rowState struct {
	row  Values
	at   time.Time // the row's last commit time, when known
	uses int       // changes in the chunk that touch this key
}

// wrote moves rs to the row w leaves, written at at, when a later change
// in the chunk reads it.
func (rs *rowState) wrote(w *Write, at time.Time) {
	if at.After(rs.at) {
		rs.at = at
	}
	if w.Op != OpUpdate || rs.uses > 0 {
		rs.row = afterWrite(rs.row, w)
	}
}

type tableKeys struct {
	table Table
	keys  []Key
	names []string
}

// addKey adds it's key to its table's group.
func addKey(groups []tableKeys, it *item) []tableKeys {
	gi := -1
	for g := range groups {
		if groups[g].table == it.c.Table {
			gi = g
			break
		}
	}
	if gi < 0 {
		groups = append(groups, tableKeys{table: it.c.Table})
		gi = len(groups) - 1
	}
	groups[gi].keys = append(groups[gi].keys, it.c.Key)
	groups[gi].names = append(groups[gi].names, it.key)
	return groups
}

// plan reads the target's rows for items and decides, change by change
// and in order, what to write. Later changes to a key see the rows the
// earlier ones in the chunk will produce. A resolver error comes back as a
// *BatchError naming the item.
func (o oneWayPlanner) plan(items []*item) (plan, error) {
	pl := plan{items: make([]itemPlan, len(items)), writes: make([]Write, 0, len(items)), writeItem: make([]int, 0, len(items))}
	rows, err := o.readRows(items)
	if err != nil {
		return pl, err
	}
	c := &o.conflict
	for i, it := range items {
		rs := rows[it.key]
		rs.uses--
		cur := rs.row
		ip := &pl.items[i]
		o.lostFields(it.c, cur)
		if !c.detect(o.dir, it.c, cur) {
			ip.out = outNoop
			continue
		}
		c.TargetTime = rs.at
		if o.cfg.Resolver != nil {
			if err := o.cfg.Resolver.Resolve(o.opCtx, c); err != nil {
				return pl, &BatchError{Index: i, Err: fmt.Errorf("resolver on %s: %w", it.c, err)}
			}
		}
		ip.kind = c.Kind
		w, ok := o.decide(c, ip)
		if ok {
			ip.out = outWrite
			pl.writes = append(pl.writes, w)
			pl.writeItem = append(pl.writeItem, i)
			rs.wrote(&w, it.c.CommitTime)
		}
		if ip.out == outDead && c.Kind != NoConflict {
			ip.info = &ConflictInfo{
				Kind:      c.Kind,
				Fields:    c.Conflicting(),
				Source:    it.c.After.Clone(),
				Target:    cur.Clone(),
				DecidedBy: c.by,
				Base:      it.c.Before.Clone(),
			}
		}
	}
	return pl, nil
}

// readRows reads the target's rows of the keys items touch, each with the
// number of items that touch it.
func (o oneWayPlanner) readRows(items []*item) (map[string]*rowState, error) {
	rows := make(map[string]*rowState, len(items))
	states := make([]rowState, len(items))
	var groups []tableKeys
	for i, it := range items {
		if rs := rows[it.key]; rs != nil {
			rs.uses++
			continue
		}
		states[i].uses = 1
		rows[it.key] = &states[i]
		groups = addKey(groups, it)
	}
	for _, g := range groups {
		vals, err := o.lookupAll(o.cfg.Target, o.dir.To, g.table, g.keys)
		if err != nil {
			return nil, err
		}
		for i, name := range g.names {
			rs, row := rows[name], vals[i]
			rs.at = stripTime(row)
			rs.row = row
		}
	}
	return rows, nil
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
