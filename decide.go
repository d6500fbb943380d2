// Deciding: the resolvers' per-field picks on one change become one write, a no-op or a
// dead letter; schema drift is reported here, once per table and field.

package duplex

import (
	"fmt"
	"strings"
)

// decide turns the resolvers' decisions into a write. It returns false when
// there is nothing to write (ip.out says whether it is a no-op or a dead letter).
func (p *Pipeline) decide(c *Conflict, ip *itemPlan) (Write, bool) {
	ch := c.Change
	if c.deadLetter != "" {
		return ip.dead(c.deadLetter)
	}
	n, undecided := countPicks(c)
	if len(undecided) > 0 {
		c.by = "default"
		return ip.dead(fmt.Sprintf("%s conflict on %s %s: no resolver decided field(s) %s",
			c.Kind, ch.Table, ch.Key, strings.Join(undecided, ", ")))
	}
	ip.resolution = resolvedApplied
	if n.keeps > 0 || n.values > 0 {
		ip.resolution = resolvedMerged
	}
	switch {
	case ch.Op == OpDelete:
		return decideDelete(c, n, ip)
	case c.Current == nil && ch.Op == OpUpdate:
		return decideRecreate(c, n, ip)
	case c.Current == nil:
		return decideInsert(c), true
	default:
		return p.decideUpdate(c, ip)
	}
}

// picks counts the fields of a conflict by what was decided for them.
type picks struct{ takes, keeps, values int }

// countPicks counts c's decided fields (a field only the source changed
// and nobody decided takes the source's value) and returns the contested
// fields nobody decided. The target's own edits kept as they are do not
// count.
func countPicks(c *Conflict) (picks, []string) {
	var n picks
	var undecided []string
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
			n.takes++
		case KeepTarget:
			n.keeps++
		case UseValue:
			n.values++
		}
	}
	return n, undecided
}

// decideDelete decides a delete: applied when no field was kept, a no-op
// when every field was, else a delete-update conflict for the DLQ.
func decideDelete(c *Conflict, n picks, ip *itemPlan) (Write, bool) {
	ch := c.Change
	if n.keeps == 0 && n.values == 0 {
		return Write{Op: OpDelete, Table: ch.Table, Key: ch.Key, Expect: c.Current, Change: ch}, true
	}
	if n.takes == 0 && n.values == 0 {
		return ip.noop()
	}
	return ip.dead(fmt.Sprintf("delete_update conflict on %s %s: resolvers kept some fields of a row the source deleted", ch.Table, ch.Key))
}

// decideRecreate decides an update of a row the target does not have:
// recreate it or not.
func decideRecreate(c *Conflict, n picks, ip *itemPlan) (Write, bool) {
	ch := c.Change
	if n.takes == 0 && n.values == 0 {
		return ip.noop()
	}
	if n.keeps > 0 {
		return ip.dead(fmt.Sprintf("update_delete conflict on %s %s: resolvers kept some fields of a row the target deleted", ch.Table, ch.Key))
	}
	if len(ch.Unchanged) > 0 {
		return ip.dead(fmt.Sprintf("update_delete conflict on %s %s: cannot recreate the row, the source did not send column(s) %s",
			ch.Table, ch.Key, strings.Join(ch.Unchanged, ", ")))
	}
	set := ch.After.Clone()
	applyValues(c, set)
	return Write{Op: OpInsert, Table: ch.Table, Key: ch.Key, Set: set, Change: ch}, true
}

// decideInsert decides the insert of a row the target does not have: the
// source's columns, less the kept ones, with the resolvers' values.
func decideInsert(c *Conflict) Write {
	ch := c.Change
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
	return Write{Op: OpInsert, Table: ch.Table, Key: ch.Key, Set: set, Change: ch}
}

// decideUpdate decides a change to a row the target has: it writes the
// decided fields only, expecting the values they were decided on.
func (p *Pipeline) decideUpdate(c *Conflict, ip *itemPlan) (Write, bool) {
	ch, cur := c.Change, c.Current
	var b setExpect
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
		b.add(f.name, v, curV)
	}
	w, ok := b.update(ch)
	if !ok {
		return ip.noop()
	}
	return w, true
}

// setExpect builds an update's Set and Expect: each field whose new value
// differs from the current one, with the current value expected.
type setExpect struct{ set, expect Values }

// add adds field f, going from cur to v, unless they are equal.
func (b *setExpect) add(f string, v, cur any) {
	if Equal(cur, v) {
		return
	}
	if b.set == nil {
		b.set, b.expect = Values{}, Values{}
	}
	b.set[f], b.expect[f] = v, cur
}

// update returns the update of ch's row, or false when no field changes.
func (b *setExpect) update(ch *Change) (Write, bool) {
	if b.set == nil {
		return Write{}, false
	}
	return Write{Op: OpUpdate, Table: ch.Table, Key: ch.Key, Set: b.set, Expect: b.expect, Change: ch}, true
}

// applyValues sets in set the values resolvers chose (Conflict.Set).
func applyValues(c *Conflict, set Values) {
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
