package dlq

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/duplexsync/duplex"
)

// HistoryLimit is the most superseded versions an entry keeps in History.
const HistoryLimit = 20

// Version is a version of a held row that a later put superseded, kept in
// Entry.History for audit.
type Version struct {
	// At is when it was put (the dead letter's At).
	At time.Time `json:"at"`
	// Direction and ChangeID name the change that put it.
	Direction duplex.Direction `json:"direction"`
	ChangeID  string           `json:"change_id"`
	// Source and Target are the rows of Direction.From and Direction.To as
	// the merge read them (ConflictInfo.Source and Target).
	Source duplex.Values `json:"source"`
	Target duplex.Values `json:"target"`
}

// RowIdentity returns what makes dead letters of one held row the same
// pending entry: the sync, the table, the key and the held fields of a
// conflict found by a two-way merge (ConflictInfo.Merge), whichever
// direction found it. A unique collision of a two-way sync
// (ConflictInfo.Unique, with Merge) is identified by the sync, the table,
// the constraint and the contested values, so the two directions' dead
// letters of one collision (each side's row refused by the other) are one
// entry, holding both rows. Any
// other dead letter (a failed change, a one-way conflict, whose change
// must be replayed as it is) has none ("") and is an entry of its own
// change.
func RowIdentity(l *duplex.DeadLetter) string {
	if l.Reason != duplex.ReasonConflict || l.Conflict == nil || !l.Conflict.Merge {
		return ""
	}
	if u := l.Conflict.Unique; u != nil && l.Conflict.Kind == duplex.UniqueCollision {
		return strings.Join([]string{"unique", l.Sync, l.Change.Table.String(), u.Constraint, u.ValuesText()}, "\x00")
	}
	fields := slices.Clone(l.Conflict.Fields)
	slices.Sort(fields)
	return strings.Join([]string{l.Sync, l.Change.Table.String(), l.Change.Key.String(), strings.Join(fields, ",")}, "\x00")
}

// NewEntry returns the entry a first put of l makes (ID left zero), now
// being the store's clock. Store implementations use it with Absorb, so
// they all keep entries alike.
func NewEntry(l *duplex.DeadLetter, now time.Time) Entry {
	dl := copyDeadLetter(l)
	if dl.At.IsZero() {
		dl.At = now
	}
	return Entry{DeadLetter: dl, FirstSeen: dl.At, LastSeen: dl.At, Count: 1, Status: StatusPending, UpdatedAt: now}
}

// Absorb folds a later put l into its entry e (found by the change's ID or
// by RowIdentity), now being the store's clock: e becomes pending, Count
// grows by one, and l becomes e's dead letter unless it is older than
// e's (a redelivery after a crash), the version it replaces going to
// History. A put older than the entry's goes to History instead.
func Absorb(e *Entry, l *duplex.DeadLetter, now time.Time) {
	dl := copyDeadLetter(l)
	if dl.At.IsZero() {
		dl.At = now
	}
	older := dl.At.Before(e.LastSeen) && dl.Change.ID != e.Change.ID
	switch {
	case older:
		e.History = addVersion(e.History, &dl)
	default:
		if dl.Change.ID != e.Change.ID {
			e.History = addVersion(e.History, &e.DeadLetter)
		}
		e.DeadLetter = dl
		e.LastSeen = dl.At
	}
	if dl.At.Before(e.FirstSeen) {
		e.FirstSeen = dl.At
	}
	e.Count++
	e.Status = StatusPending
	e.UpdatedAt = now
}

func addVersion(h []Version, l *duplex.DeadLetter) []Version {
	v := Version{At: l.At, Direction: l.Direction, ChangeID: l.Change.ID, Source: l.Change.After, Target: nil}
	if l.Conflict != nil {
		v.Source, v.Target = l.Conflict.Source, l.Conflict.Target
	}
	h = append(h, v)
	slices.SortStableFunc(h, func(a, b Version) int { return a.At.Compare(b.At) })
	if len(h) > HistoryLimit {
		h = slices.Delete(h, 0, len(h)-HistoryLimit)
	}
	return h
}

// ThreeWay is an entry's three-way view: the agreed row and both sides'
// rows, field by field.
type ThreeWay struct {
	// Sides names the two systems, in the order of Rows and of each
	// field's Values.
	Sides [2]string `json:"sides"`
	// Base is the row both sides last agreed on (nil: unknown, or none).
	Base duplex.Values `json:"base"`
	// Rows are the two sides' rows as recorded (nil: the row is absent).
	Rows [2]duplex.Values `json:"rows"`
	// Fields lists every field of the three rows, key columns first, then
	// by name.
	Fields []FieldView `json:"fields"`
	// HeldBy names the resolver that held the row, Rule its explanation.
	HeldBy string `json:"held_by,omitempty"`
	Rule   string `json:"rule,omitempty"`
}

// FieldView is one field of a three-way view.
type FieldView struct {
	Name string `json:"name"`
	// Base and Values are the field's value in the base and on each side;
	// BaseAbsent and Absent say the row lacks the field.
	Base       any     `json:"base"`
	Values     [2]any  `json:"values"`
	BaseAbsent bool    `json:"base_absent,omitempty"`
	Absent     [2]bool `json:"absent"`
	// Differs: the two sides hold different values. Changed: a side's
	// value differs from the base. Held: a contested field the resolvers
	// did not decide. Key: a primary-key column.
	Differs bool    `json:"differs"`
	Changed [2]bool `json:"changed"`
	Held    bool    `json:"held"`
	Key     bool    `json:"key,omitempty"`
}

// ThreeWay returns the entry's three-way view with the sides in the order
// given (each a direction end of the entry; otherwise From, To), or nil
// when the entry has no conflict.
func (e *Entry) ThreeWay(sides [2]string) *ThreeWay {
	c := e.Conflict
	if c == nil {
		return nil
	}
	tw := &ThreeWay{Sides: [2]string{e.Direction.From, e.Direction.To}, Base: c.Base, Rows: [2]duplex.Values{c.Source, c.Target},
		HeldBy: c.DecidedBy, Rule: e.Error}
	if sides[0] == e.Direction.To && sides[1] == e.Direction.From {
		tw.Sides, tw.Rows = sides, [2]duplex.Values{c.Target, c.Source}
	}
	held := make(map[string]bool, len(c.Fields))
	for _, f := range c.Fields {
		held[f] = true
	}
	var names []string
	for _, r := range []duplex.Values{c.Base, c.Source, c.Target} {
		for f := range r {
			names = append(names, f)
		}
	}
	names = append(names, c.Fields...)
	slices.Sort(names)
	names = slices.Compact(names)
	var keys []string
	for _, col := range e.Change.Key {
		keys = append(keys, col.Name)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return slices.Contains(keys, n) })
	for i, name := range append(keys, names...) {
		fv := FieldView{Name: name, Held: held[name], Key: i < len(keys)}
		var bok bool
		fv.Base, bok = tw.Base[name]
		fv.BaseAbsent = !bok
		for s := range 2 {
			v, ok := tw.Rows[s][name]
			fv.Values[s], fv.Absent[s] = v, !ok
			fv.Changed[s] = ok != bok || !duplex.Equal(v, fv.Base)
		}
		fv.Differs = fv.Absent[0] != fv.Absent[1] || !duplex.Equal(fv.Values[0], fv.Values[1])
		tw.Fields = append(tw.Fields, fv)
	}
	return tw
}

// MarshalJSON encodes the entry with, besides its fields, the row's
// table ("public.customers") and key (duplex.Key.String) at the top
// level and, for a conflict, its three-way view (sides in name order).
func (e Entry) MarshalJSON() ([]byte, error) {
	type plain Entry
	sides := [2]string{e.Direction.From, e.Direction.To}
	if sides[1] < sides[0] {
		sides[0], sides[1] = sides[1], sides[0]
	}
	return json.Marshal(struct {
		plain
		Table    string    `json:"table"`
		Key      string    `json:"key"`
		ThreeWay *ThreeWay `json:"three_way,omitempty"`
	}{plain(e), e.Change.Table.String(), e.Change.Key.String(), e.ThreeWay(sides)})
}
