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
