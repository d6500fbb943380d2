package duplex

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Unique collisions: a write that would give its row the value of a unique
// constraint (other than the primary key) that another row of the target
// holds already. The same e-mail inserted on both sides under different
// ids fails in both directions; each direction's dead letter names the
// constraint, the contested values and the row holding them, so the DLQ
// keeps the two as one entry (dlq.RowIdentity) with both rows, and both
// stay where they are until a person acts.

// UniqueError is an apply error: the write would give its row values
// that another row of the target holds under a unique constraint or index
// that is not the primary key. An Applier returns it (inside a
// *BatchError naming the write) so that the Pipeline dead-letters the
// change as a unique collision with both rows. It is as permanent as the
// error it wraps.
type UniqueError struct {
	// Table is the table of the write.
	Table Table
	// Unique describes the collision: the constraint, its columns and
	// values, and the key of the row holding them (HolderKey).
	Unique UniqueInfo
	// Holder is the target's row holding the values (nil: not found, when
	// the index has expressions or the row went away since).
	Holder Values
	// Err is the database's error, classified.
	Err error
}

// Error names the table, the constraint, the values and the holding row.
func (e *UniqueError) Error() string {
	return fmt.Sprintf("%s: %s: %v", e.Table, e.Unique.describe(), e.Err)
}

// Unwrap returns the database's error.
func (e *UniqueError) Unwrap() error { return e.Err }

// UniqueInfo describes a unique collision in ConflictInfo.Unique
// (Kind UniqueCollision). The conflict's Source is the incoming row and
// Target the row of Direction.To that holds the values.
type UniqueInfo struct {
	// Constraint names the unique constraint or index.
	Constraint string `json:"constraint"`
	// Columns are its columns in index order; nil when it has expressions
	// (Detail then tells the values).
	Columns []string `json:"columns,omitempty"`
	// Values are the contested values of Columns.
	Values Values `json:"values,omitempty"`
	// Detail is the database's own description of the collision
	// ("Key (email)=(ann@x) already exists.").
	Detail string `json:"detail,omitempty"`
	// HolderKey is the key of the row that holds the values on the target
	// (ConflictInfo.Target); nil when it was not found.
	HolderKey Key `json:"holder_key,omitempty"`
}

// ValuesText renders the contested values canonically, columns in index
// order (`email="ann@x"`), or the database's detail when the columns are
// not known: the same from either side of the collision.
func (u *UniqueInfo) ValuesText() string {
	if len(u.Columns) == 0 {
		return u.Detail
	}
	k := make(Key, len(u.Columns))
	for i, c := range u.Columns {
		k[i] = Column{Name: c, Value: u.Values[c]}
	}
	return k.String()
}

func (u *UniqueInfo) describe() string {
	s := "unique constraint " + u.Constraint + " (" + u.ValuesText() + ")"
	if u.HolderKey != nil {
		s += " is held by the row " + u.HolderKey.String()
	}
	return s
}

// uniqueConflict returns the ConflictInfo and the explanation of a change
// whose apply failed with a *UniqueError, or false. merge says a two-way
// merge planned the write (ConflictInfo.Merge): the row's newest version
// is what a retry merges, so the collision's dead letters may be one
// entry; one way, each change is replayed as it is.
func uniqueConflict(dir Direction, c *Change, err error, merge bool) (*ConflictInfo, string, bool) {
	var ue *UniqueError
	if !errors.As(err, &ue) {
		return nil, "", false
	}
	u := ue.Unique
	u.Columns, u.Values, u.HolderKey = append([]string(nil), u.Columns...), u.Values.Clone(), append(Key(nil), u.HolderKey...)
	holder := "a row of " + dir.To + " that was not found again"
	if u.HolderKey != nil {
		holder = dir.To + "'s row " + u.HolderKey.String()
	}
	what := "the same values"
	if len(u.Columns) > 0 {
		what = strings.Join(u.Columns, ", ")
	}
	text := fmt.Sprintf("unique collision on %s: %s's row %s has %s, which %s holds already under unique constraint %s; "+
		"both rows stay where they are: change %s on one of them, then retry",
		c.Table, dir.From, c.Key, u.ValuesText(), holder, u.Constraint, what)
	return &ConflictInfo{Kind: UniqueCollision, Fields: u.Columns, Source: c.After.Clone(), Target: ue.Holder.Clone(), Unique: &u, Merge: merge}, text, true
}

// retryUnique retries a unique collision: the entry's change, and then,
// when it went through, the holding row the other way, so that both rows
// end up on both sides (the holding row's own change may be held in the
// same entry, superseded by this one).
func (s *Sync) retryUnique(ctx context.Context, p *Pipeline, dl *DeadLetter) (ActionResult, error) {
	res, err := p.Replay(ctx, &dl.Change)
	u := dl.Conflict.Unique
	if err != nil || res.Outcome == OutcomeDeadLettered || u.HolderKey == nil {
		return res, err
	}
	back, err := s.pipeline(&DeadLetter{Sync: dl.Sync, Direction: dl.Direction.Reverse()})
	if err != nil {
		return res, err
	}
	_, holderSide, err := s.endpoint(dl.Direction.From)
	if err != nil {
		return res, err
	}
	row, _, err := lookupOne(ctx, holderSide, dl.Change.Table, u.HolderKey)
	if err != nil {
		return res, err
	}
	op := OpUpdate
	if row == nil {
		op = OpDelete
	}
	ch := &Change{ID: "retry-unique:" + dl.Change.ID + ":" + u.HolderKey.String(), Source: holderSide.Name, Table: dl.Change.Table,
		Key: u.HolderKey, Op: op, After: row, CommitTime: time.Now()}
	hres, err := back.Replay(ctx, ch)
	if err != nil {
		return res, fmt.Errorf("duplex: %s went through; the row %s holding the values on %s: %w", dl.Change.String(), u.HolderKey, holderSide.Name, err)
	}
	res.Detail += "; the holding row: " + hres.Detail
	if hres.Outcome == OutcomeDeadLettered {
		res.Outcome = OutcomeDeadLettered
	}
	return res, nil
}

// ErrNotOffered is returned by an operator action that does not apply to
// the entry (keep both on a unique collision, resolve on a unique
// collision, keep both on a key not fed by a sequence); the error says why
// and what to do instead. Nothing was written.
var ErrNotOffered = errors.New("duplex: the action is not offered for this entry")

// refuseUnique returns, for a unique collision, why action does not apply
// and what to do instead (ErrNotOffered), else nil.
func refuseUnique(dl *DeadLetter, action string) error {
	if dl == nil || dl.Conflict == nil || dl.Conflict.Kind != UniqueCollision || dl.Conflict.Unique == nil {
		return nil
	}
	u := dl.Conflict.Unique
	holder := "the row holding them on " + dl.Direction.To
	if u.HolderKey != nil {
		holder = dl.Direction.To + "'s row " + u.HolderKey.String()
	}
	what := "the contested values"
	if len(u.Columns) > 0 {
		what = strings.Join(u.Columns, ", ")
	}
	return fmt.Errorf("%w: %s: %s of %s is a unique collision, not two rows under one key: %s's row %s and %s have different keys already, "+
		"and what collides is %s under unique constraint %s; both can only exist on both sides once %s differs: change %s on one of the two rows, then retry the entry (or dismiss it to leave each row on its side)",
		ErrNotOffered, action, dl.Change.Key, dl.Change.Table, dl.Direction.From, dl.Change.Key, holder, u.ValuesText(), u.Constraint, what, what)
}
