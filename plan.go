package duplex

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

type outcome uint8

const (
	outNoop outcome = iota
	outWrite
	outDead
)

type itemPlan struct {
	out        outcome
	alsoDead   bool // written in part (a merge's flowing fields) and dead-lettered for the rest
	kind       ConflictKind
	resolution string
	reason     string
	info       *ConflictInfo
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

// makePlan reads the target's rows for items and decides, change by change
// and in order, what to write. Later changes to a key see the rows the
// earlier ones in the chunk will produce. A resolver error comes back as a
// *BatchError naming the item.
func (p *Pipeline) makePlan(items []*item) (plan, error) {
	pl := plan{items: make([]itemPlan, len(items)), writes: make([]Write, 0, len(items)), writeItem: make([]int, 0, len(items))}
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
		vals, err := p.lookupAll(p.cfg.Target, p.dir.To, g.table, g.keys)
		if err != nil {
			return pl, err
		}
		for i, name := range g.names {
			rs, row := rows[name], vals[i]
			rs.at = stripTime(row)
			rs.row = row
		}
	}

	c := &p.conflict
	for i, it := range items {
		rs := rows[it.key]
		rs.uses--
		cur := rs.row
		ip := &pl.items[i]
		p.lostFields(it.c, cur)
		if !c.detect(p.dir, it.c, cur) {
			ip.out = outNoop
			continue
		}
		c.TargetTime = rs.at
		if p.cfg.Resolver != nil {
			if err := p.cfg.Resolver.Resolve(p.opCtx, c); err != nil {
				return pl, &BatchError{Index: i, Err: fmt.Errorf("resolver on %s: %w", it.c, err)}
			}
		}
		ip.kind = c.Kind
		w, ok := p.decide(c, ip)
		if ok {
			ip.out = outWrite
			pl.writes = append(pl.writes, w)
			pl.writeItem = append(pl.writeItem, i)
			if it.c.CommitTime.After(rs.at) {
				rs.at = it.c.CommitTime
			}
			switch w.Op {
			case OpInsert:
				rs.row = w.Set
			case OpDelete:
				rs.row = nil
			case OpUpdate:
				if rs.uses > 0 { // a later change in the chunk reads it
					next := cur.Clone()
					for f, v := range w.Set {
						next[f] = v
					}
					rs.row = next
				}
			}
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

// decide turns the resolvers' decisions into a write. It returns false when
// there is nothing to write (ip.out says whether it is a no-op or a dead letter).
func (p *Pipeline) decide(c *Conflict, ip *itemPlan) (Write, bool) {
	ch := c.Change
	dead := func(reason string) (Write, bool) {
		ip.out, ip.reason, ip.resolution = outDead, reason, "dead_lettered"
		return Write{}, false
	}
	noop := func() (Write, bool) {
		ip.out, ip.resolution = outNoop, "kept_target"
		return Write{}, false
	}
	if c.deadLetter != "" {
		return dead(c.deadLetter)
	}
	var undecided []string
	takes, keeps, values := 0, 0, 0
	for i := range c.fields {
		f := &c.fields[i]
		if f.targetOnly && f.pick == KeepTarget {
			continue // the target's own edit, left as it is
		}
		if f.pick == Undecided {
			if f.conflicting {
				undecided = append(undecided, f.name)
				continue
			}
			f.pick = TakeSource
		}
		switch f.pick {
		case TakeSource:
			takes++
		case KeepTarget:
			keeps++
		case UseValue:
			values++
		}
	}
	if len(undecided) > 0 {
		c.by = "default"
		return dead(fmt.Sprintf("%s conflict on %s %s: no resolver decided field(s) %s",
			c.Kind, ch.Table, ch.Key, strings.Join(undecided, ", ")))
	}
	ip.resolution = "applied"
	if keeps > 0 || values > 0 {
		ip.resolution = "merged"
	}
	cur := c.Current
	switch {
	case ch.Op == OpDelete:
		if keeps == 0 && values == 0 {
			return Write{Op: OpDelete, Table: ch.Table, Key: ch.Key, Expect: cur, Change: ch}, true
		}
		if takes == 0 && values == 0 {
			return noop()
		}
		return dead(fmt.Sprintf("delete_update conflict on %s %s: resolvers kept some fields of a row the source deleted", ch.Table, ch.Key))

	case cur == nil && ch.Op == OpUpdate: // the target has no row: recreate it or not
		if takes == 0 && values == 0 {
			return noop()
		}
		if keeps > 0 {
			return dead(fmt.Sprintf("update_delete conflict on %s %s: resolvers kept some fields of a row the target deleted", ch.Table, ch.Key))
		}
		if len(ch.Unchanged) > 0 {
			return dead(fmt.Sprintf("update_delete conflict on %s %s: cannot recreate the row, the source did not send column(s) %s",
				ch.Table, ch.Key, strings.Join(ch.Unchanged, ", ")))
		}
		set := ch.After.Clone()
		p.applyValues(c, set)
		return Write{Op: OpInsert, Table: ch.Table, Key: ch.Key, Set: set, Change: ch}, true

	case cur == nil: // insert of a new row
		set := make(Values, len(ch.After))
		for f, v := range ch.After {
			if !ch.IsUnchanged(f) {
				set[f] = v
			}
		}
		for i := range c.fields {
			f := &c.fields[i]
			switch f.pick {
			case KeepTarget:
				if !isKeyColumn(ch.Key, f.name) {
					delete(set, f.name)
				}
			case UseValue:
				set[f.name] = f.value
			}
		}
		return Write{Op: OpInsert, Table: ch.Table, Key: ch.Key, Set: set, Change: ch}, true

	default: // the row exists: write the decided fields only
		var set, expect Values
		for i := range c.fields {
			f := &c.fields[i]
			var v any
			switch f.pick {
			case TakeSource:
				v = ch.After[f.name]
			case UseValue:
				v = f.value
			default:
				continue
			}
			curV, ok := cur[f.name]
			if !ok {
				p.drift(ch.Table, f.name)
				continue
			}
			if Equal(curV, v) {
				continue
			}
			if set == nil {
				set, expect = make(Values, 1), make(Values, 1)
			}
			set[f.name], expect[f.name] = v, curV
		}
		if len(set) == 0 {
			return noop()
		}
		return Write{Op: OpUpdate, Table: ch.Table, Key: ch.Key, Set: set, Expect: expect, Change: ch}, true
	}
}

func (p *Pipeline) applyValues(c *Conflict, set Values) {
	for i := range c.fields {
		if f := &c.fields[i]; f.pick == UseValue {
			set[f.name] = f.value
		}
	}
}

// drift reports, once per table and field, a source field the target row
// does not have; the field is ignored.
func (p *Pipeline) drift(t Table, field string) {
	if !p.firstDrift(t, field, "") {
		return
	}
	p.log.WarnContext(p.opCtx, "schema drift: source field missing on the target; ignored",
		"table", t.String(), "field", field)
	p.obs.Drifted(p.opCtx, DriftEvent{Direction: p.dir, Table: t, Field: field})
}

// lostFields reports, once per table and field, fields the target row has
// that a change carrying a whole row (every column the source has) lacks.
func (p *Pipeline) lostFields(ch *Change, cur Values) {
	if cur == nil || ch.After == nil {
		return
	}
	for f := range cur {
		if _, ok := ch.After[f]; ok || ch.IsUnchanged(f) || !p.firstDrift(ch.Table, f, "lost") {
			continue
		}
		p.log.WarnContext(p.opCtx, "schema drift: target field missing on the source; its values are no longer synced",
			"table", ch.Table.String(), "field", f)
		p.obs.Drifted(p.opCtx, DriftEvent{Direction: p.dir, Table: ch.Table, Field: f, SourceLost: true})
	}
}

func (p *Pipeline) firstDrift(t Table, field, kind string) bool {
	k := t.String() + "." + field + "/" + kind
	if p.drifted == nil {
		p.drifted = make(map[string]bool)
	}
	if p.drifted[k] {
		return false
	}
	p.drifted[k] = true
	return true
}

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
			p.obs.Conflicted(p.opCtx, ConflictEvent{Direction: p.dir, Table: it.c.Table, Kind: ip.kind, Resolution: ip.resolution})
			if ip.out != outDead {
				p.log.DebugContext(p.opCtx, "conflict resolved", "table", it.c.Table.String(), "key", it.c.Key.String(),
					"kind", ip.kind.String(), "resolution", ip.resolution)
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
