// Conflict detection: which fields of a change conflict with the target's row, and the
// Conflict a Resolver decides them on.

package duplex

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ConflictKind classifies how an incoming change relates to the target's
// current row.
type ConflictKind uint8

// Conflict kinds. A conflict exists only when both sides changed the same
// field since they last agreed (or, for whole rows, one side deleted what
// the other changed).
const (
	// NoConflict: only the source changed the fields at stake. Resolvers still
	// see it, so field authority can hold back fields the source does not own.
	NoConflict ConflictKind = iota
	// UpdateUpdate: both sides changed the same field(s) to different values.
	UpdateUpdate
	// InsertInsert: the source inserted a key the target already has, with
	// different values.
	InsertInsert
	// UpdateDelete: the source updated a row the target does not have
	// (deleted there, or never synced).
	UpdateDelete
	// DeleteUpdate: the source deleted a row the target changed since the two
	// last agreed.
	DeleteUpdate
	// UniqueCollision: the change would give its row the values of a
	// unique constraint (not the primary key) that another row of the
	// target holds (see UniqueError, ConflictInfo.Unique).
	UniqueCollision
)

// String returns the snake_case kind name used in metrics and the DLQ.
func (k ConflictKind) String() string {
	switch k {
	case NoConflict:
		return "none"
	case UpdateUpdate:
		return "update_update"
	case InsertInsert:
		return "insert_insert"
	case UpdateDelete:
		return "update_delete"
	case DeleteUpdate:
		return "delete_update"
	case UniqueCollision:
		return "unique_collision"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// MarshalText implements encoding.TextMarshaler.
func (k ConflictKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *ConflictKind) UnmarshalText(b []byte) error {
	for c := NoConflict; c <= UniqueCollision; c++ {
		if c.String() == string(b) {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("duplex: unknown conflict kind %q", b)
}

// Pick is the decision for one field.
type Pick uint8

// Decisions a Resolver can make for a field.
const (
	// Undecided leaves the field to the next resolver in a chain. After the
	// chain, undecided fields only the source changed take the source's value;
	// undecided conflicting fields send the change to the DLQ.
	Undecided Pick = iota
	// TakeSource writes the source's value.
	TakeSource
	// KeepTarget leaves the target's value as it is.
	KeepTarget
	// UseValue writes a value the resolver computed (Conflict.Set).
	UseValue
)

// String returns the pick's name.
func (p Pick) String() string {
	switch p {
	case TakeSource:
		return "source"
	case KeepTarget:
		return "target"
	case UseValue:
		return "value"
	}
	return "undecided"
}

type fieldState struct {
	name        string
	conflicting bool
	converged   bool // both sides changed it to the same value
	targetOnly  bool // a two-way merge: only the target changed it
	pick        Pick
	value       any
	by          string
}

// byConverged and byTargetOnly mark the default decisions on a converged
// field and on a field only the target changed.
const (
	byConverged  = "converged"
	byTargetOnly = "target_only"
)

// Conflict is one incoming change set against the target's current row, with
// the fields at stake and the decisions made on them so far. The Pipeline
// builds one for every change that would modify the target and hands it to
// the Resolver, which decides fields with Take, Keep, Set or DeadLetter.
// Despite its name it also describes conflict-free changes (Kind ==
// NoConflict), so that field authority can hold back fields a source does
// not own.
//
// A Conflict is valid only during the Resolve call; a Resolver must not keep it.
type Conflict struct {
	// Direction is the flow the change travels.
	Direction Direction
	// Kind classifies the conflict.
	Kind ConflictKind
	// Change is the incoming change. It must not be modified. In a two-way
	// Sync it is the merge's view of the source: the triggering change's
	// identity and table, Before the row both sides last agreed on, After
	// the source's current row (Op follows: insert when there was no agreed
	// row, delete when the source has none now).
	Change *Change
	// Current is the target's current row; nil when the target has no row.
	Current Values
	// SourceTime is when the source made the change (its commit time; in a
	// two-way Sync the source row's commit time when its Applier reports
	// one under CommitTimeField).
	SourceTime time.Time
	// TargetTime is when the target row was last committed, when the Applier
	// reports it (see CommitTimeField); zero otherwise.
	TargetTime time.Time
	// BaseUncertain is set in a two-way Sync when the previous merge of the
	// row was interrupted between its two writes (see Agreement.Torn): the
	// base (Change.Before, BaseValue) predates it, so one side may already
	// hold part of the other's change. Resolvers that pick a side's value
	// are unaffected; one that computes from the base (adding counter
	// deltas) must not trust it and should dead-letter instead.
	BaseUncertain bool

	fields     []fieldState
	deadLetter string
	by         string
}

// Table is the table of the incoming change.
func (c *Conflict) Table() Table { return c.Change.Table }

// Fields returns the fields at stake in order: the ones both sides changed
// and the ones only the source changed. For deletes they are the fields the
// target changed since the row was last in agreement.
func (c *Conflict) Fields() []string {
	out := make([]string, 0, len(c.fields))
	for i := range c.fields {
		if !c.fields[i].targetOnly {
			out = append(out, c.fields[i].name)
		}
	}
	return out
}

// TargetOnly returns, in a two-way Sync, the fields only the target
// changed since the two systems last agreed (a one-way Pipeline leaves the
// target's own edits alone). They keep the target's value, which the merge
// then writes to the source, unless a resolver decides otherwise (Take
// writes the source's value, the agreed one, back to the target): field
// authority does so where the source's system owns the field, so that a
// non-owner's edit never spreads, whichever direction merges it first.
func (c *Conflict) TargetOnly() []string {
	var out []string
	for i := range c.fields {
		if c.fields[i].targetOnly {
			out = append(out, c.fields[i].name)
		}
	}
	return out
}

// Converged returns the fields both sides changed, to the same value. They
// are kept as they are unless a resolver decides otherwise (a counter merge
// adds both increments: Set(field, current + after - base)); other
// resolvers can ignore them.
func (c *Conflict) Converged() []string {
	var out []string
	for i := range c.fields {
		if c.fields[i].converged {
			out = append(out, c.fields[i].name)
		}
	}
	return out
}

// Conflicting returns the fields both sides changed to different values.
func (c *Conflict) Conflicting() []string {
	var out []string
	for i := range c.fields {
		if c.fields[i].conflicting {
			out = append(out, c.fields[i].name)
		}
	}
	return out
}

// IsConflicting reports whether both sides changed field.
func (c *Conflict) IsConflicting(field string) bool {
	f := c.field(field)
	return f != nil && f.conflicting
}

// Undecided returns the fields no resolver has decided yet.
func (c *Conflict) Undecided() []string {
	var out []string
	for i := range c.fields {
		if c.fields[i].pick == Undecided {
			out = append(out, c.fields[i].name)
		}
	}
	return out
}

// Decision returns the pick made for field and the value for UseValue.
func (c *Conflict) Decision(field string) (Pick, any) {
	if f := c.field(field); f != nil {
		return f.pick, f.value
	}
	return Undecided, nil
}

// SourceValue returns the source's new value of field (nil, false for
// deletes and fields the source did not send).
func (c *Conflict) SourceValue(field string) (any, bool) {
	v, ok := c.Change.After[field]
	return v, ok
}

// TargetValue returns the target's current value of field.
func (c *Conflict) TargetValue(field string) (any, bool) {
	v, ok := c.Current[field]
	return v, ok
}

// BaseValue returns the value both sides last agreed on, if known: in a
// two-way Sync the agreed row of the key (see AgreementStore), else the
// source's before image.
func (c *Conflict) BaseValue(field string) (any, bool) {
	v, ok := c.Change.Before[field]
	return v, ok
}

// Take decides that field takes the source's value. by names the resolver
// (for the DLQ and metrics). Decided fields are not changed again; Take
// reports whether it made the decision.
func (c *Conflict) Take(field, by string) bool { return c.decide(field, TakeSource, nil, by) }

// Keep decides that field keeps the target's value.
func (c *Conflict) Keep(field, by string) bool { return c.decide(field, KeepTarget, nil, by) }

// Set decides that field gets value (a merge the resolver computed).
func (c *Conflict) Set(field string, value any, by string) bool {
	return c.decide(field, UseValue, value, by)
}

// DeadLetter decides that nobody wins: the change goes to the DLQ with
// reason, and the target row stays as it is until someone resolves it.
func (c *Conflict) DeadLetter(reason, by string) {
	if c.deadLetter == "" {
		c.deadLetter, c.by = reason, by
	}
}

// DeadLettered returns the reason given to DeadLetter ("" if none).
func (c *Conflict) DeadLettered() string { return c.deadLetter }

// Done reports whether every field is decided or the change is dead-lettered;
// a Chain stops there.
func (c *Conflict) Done() bool {
	if c.deadLetter != "" {
		return true
	}
	for i := range c.fields {
		if c.fields[i].pick == Undecided {
			return false
		}
	}
	return true
}

func (c *Conflict) decide(field string, p Pick, v any, by string) bool {
	f := c.field(field)
	if f == nil || (f.pick != Undecided && !(f.converged && f.by == byConverged) && !(f.targetOnly && f.by == byTargetOnly)) {
		return false
	}
	f.pick, f.value, f.by = p, v, by
	return true
}

func (c *Conflict) field(name string) *fieldState {
	for i := range c.fields {
		if c.fields[i].name == name {
			return &c.fields[i]
		}
	}
	return nil
}

// String summarises the conflict for logs: "update_update public.customers id=7 [email]".
func (c *Conflict) String() string {
	return c.Kind.String() + " " + c.Change.Table.String() + " " + c.Change.Key.String() + " [" + strings.Join(c.Conflicting(), ",") + "]"
}

// reset prepares c for a new change, keeping its field slice's memory.
func (c *Conflict) reset(d Direction, ch *Change, current Values) {
	c.Direction = d
	c.Kind = NoConflict
	c.Change = ch
	c.Current = current
	c.SourceTime = ch.CommitTime
	c.TargetTime = time.Time{}
	c.BaseUncertain = false
	c.fields = c.fields[:0]
	c.deadLetter, c.by = "", ""
}

func (c *Conflict) add(name string, conflicting bool) {
	c.fields = append(c.fields, fieldState{name: name, conflicting: conflicting})
}

// sortFields puts the fields at stake in name order, so that everything
// derived from a conflict is deterministic. There are usually few.
func (c *Conflict) sortFields() {
	f := c.fields
	for i := 1; i < len(f); i++ {
		for j := i; j > 0 && f[j].name < f[j-1].name; j-- {
			f[j], f[j-1] = f[j-1], f[j]
		}
	}
}

// isKeyColumn reports whether name is one of the key's columns.
func isKeyColumn(k Key, name string) bool {
	for _, c := range k {
		if c.Name == name {
			return true
		}
	}
	return false
}

// detect fills c with the fields at stake for ch against current and
// classifies the conflict. It returns false when the change needs no write
// at all (the target already holds what the source says).
func (c *Conflict) detect(d Direction, ch *Change, current Values) bool {
	need := c.classify(d, ch, current)
	if need {
		c.sortFields()
	}
	return need
}

// detectMerge is detect for a two-way merge: the fields only the target
// changed since the base (ch.Before) are offered too (see TargetOnly).
func (c *Conflict) detectMerge(d Direction, ch *Change, current Values) bool {
	need := c.classify(d, ch, current)
	if ch.Op == OpUpdate && current != nil && ch.Before != nil {
		for f, cur := range current {
			before, ok := ch.Before[f]
			after, sent := ch.After[f]
			if !ok || !sent || isKeyColumn(ch.Key, f) || !Equal(after, before) || Equal(cur, before) || c.field(f) != nil {
				continue
			}
			c.fields = append(c.fields, fieldState{name: f, targetOnly: true, pick: KeepTarget, by: byTargetOnly})
			need = true
		}
	}
	if need {
		c.sortFields()
	}
	return need
}

func (c *Conflict) classify(d Direction, ch *Change, current Values) bool {
	c.reset(d, ch, current)
	switch ch.Op {
	case OpInsert:
		return c.classifyInsert(ch, current)
	case OpUpdate:
		return c.classifyUpdate(ch, current)
	case OpDelete:
		return c.classifyDelete(ch, current)
	}
	return false
}

// classifyInsert classifies an insert: a new row, or insert-insert.
func (c *Conflict) classifyInsert(ch *Change, current Values) bool {
	if current == nil {
		for f := range ch.After {
			c.add(f, false)
		}
		return true
	}
	// The target has the key already: every differing field is
	// contested, since neither side saw the other's insert.
	for f := range ch.After {
		if ch.IsUnchanged(f) || isKeyColumn(ch.Key, f) {
			continue
		}
		if cur, ok := current[f]; !ok || !Equal(cur, ch.After[f]) {
			c.add(f, true)
		}
	}
	if len(c.fields) == 0 {
		return false
	}
	c.Kind = InsertInsert
	return true
}

// classifyUpdate classifies an update: the fields the source changed, and
// update-update or update-delete.
func (c *Conflict) classifyUpdate(ch *Change, current Values) bool {
	if current == nil {
		for f := range ch.After {
			if ch.IsUnchanged(f) || isKeyColumn(ch.Key, f) {
				continue
			}
			if ch.Before != nil {
				if b, ok := ch.Before[f]; ok && Equal(b, ch.After[f]) {
					continue
				}
			}
			c.add(f, true)
		}
		c.Kind = UpdateDelete
		return true
	}
	conflict := false
	for f := range ch.After {
		if ch.IsUnchanged(f) || isKeyColumn(ch.Key, f) {
			continue
		}
		after := ch.After[f]
		cur, hasCur := current[f]
		if hasCur && Equal(cur, after) {
			// Already there: nothing to write, nothing to contest. When both
			// sides changed it to this value, resolvers that merge (counters)
			// may still want to know: it is offered as converged, kept by
			// default.
			if ch.Before != nil {
				if before, ok := ch.Before[f]; ok && !Equal(before, after) {
					c.fields = append(c.fields, fieldState{name: f, converged: true, pick: KeepTarget, by: byConverged})
				}
			}
			continue
		}
		if ch.Before == nil {
			// No before image: the source's value differs from the target's,
			// and without a baseline we cannot tell who changed it.
			c.add(f, false)
			continue
		}
		before, hasBefore := ch.Before[f]
		if hasBefore && Equal(before, after) {
			continue // the source did not change this field
		}
		targetChanged := hasCur && hasBefore && !Equal(cur, before)
		c.add(f, targetChanged)
		conflict = conflict || targetChanged
	}
	if len(c.fields) == 0 {
		return false
	}
	if conflict {
		c.Kind = UpdateUpdate
	}
	return true
}

// classifyDelete classifies a delete: delete-update when the target
// changed fields of the row the source deleted.
func (c *Conflict) classifyDelete(ch *Change, current Values) bool {
	if current == nil {
		return false
	}
	if ch.Before != nil {
		for f := range ch.Before {
			if ch.IsUnchanged(f) || isKeyColumn(ch.Key, f) {
				continue
			}
			if cur, ok := current[f]; ok && !Equal(cur, ch.Before[f]) {
				c.add(f, true)
			}
		}
	}
	if len(c.fields) > 0 {
		c.Kind = DeleteUpdate
	}
	return true
}
