package duplex

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Keep both under new keys: two different rows made under one key, one on
// each side (both sides' sequences handed out the same id before the sync
// ran), are held in the DLQ as an insert-insert conflict. Keeping both
// gives the row of one side (the moved side) a new key drawn from that
// side's sequence, on both sides, so both rows exist on both sides: the
// moved side's row is moved to the new key and gets the other side's row
// under the old key; the other side gets the moved row under the new key.

// KeyAllocator is implemented by Appliers that can draw a fresh primary
// key for a table from the sequence or identity column that feeds it (for
// Sync.KeepBoth).
type KeyAllocator interface {
	// NewKey returns a key for table drawn from its key's sequence: a value
	// the sequence never handed out before. It fails with an error matching
	// ErrNotOffered that says why and what to do instead when the key has
	// more than one column or no sequence feeds it, or when rows of other
	// tables reference the row old through foreign keys (moving it would
	// leave them pointing at the row that takes its place).
	NewKey(ctx context.Context, table Table, old Key) (Key, error)
}

// ErrKeyTaken is returned by KeepBoth when a row already holds the new key
// on a side: nothing was written; draw another key (Sync.NewKey).
var ErrKeyTaken = errors.New("duplex: the new key is taken")

// NewKey draws the key that KeepBoth gives the row of side move (an
// endpoint name, or "a"/"b"), from the sequence feeding the key of dl's
// table on that side. It answers ErrNotOffered, saying why and what to do
// instead, when keep both does not apply: dl is a unique collision (the
// rows have different keys already), it is not an insert-insert conflict
// (rows the sides agreed on before are one row), the key does not hold two
// different rows, one on each side, or no sequence feeds the key. Drawing a key writes nothing but uses up a value of the sequence.
func (s *Sync) NewKey(ctx context.Context, dl *DeadLetter, move string) (Key, error) {
	if _, err := s.pipeline(dl); err != nil {
		return nil, err
	}
	if err := refuseUnique(dl, "keep both"); err != nil {
		return nil, err
	}
	mv, other, err := s.endpoint(move)
	if err != nil {
		return nil, err
	}
	t, k := dl.Change.Table, dl.Change.Key
	what := t.String() + " " + k.String()
	if dl.Conflict == nil {
		return nil, fmt.Errorf("%w: keep both: %s is held for %s, not for two rows under one key: retry or dismiss it", ErrNotOffered, what, dl.Reason)
	}
	if dl.Conflict.Kind != InsertInsert {
		return nil, fmt.Errorf("%w: keep both: %s is an %s conflict: the two sides agreed on the row before, so it is one row changed on both sides, not two rows made under one key (an %s conflict): resolve it instead",
			ErrNotOffered, what, dl.Conflict.Kind, InsertInsert)
	}
	mrow, _, err := lookupOne(ctx, mv, t, k)
	if err != nil {
		return nil, err
	}
	orow, _, err := lookupOne(ctx, other, t, k)
	if err != nil {
		return nil, err
	}
	switch {
	case mrow == nil || orow == nil:
		missing := mv.Name
		if mrow != nil {
			missing = other.Name
		}
		return nil, fmt.Errorf("%w: keep both: %s has no row on %s: there are not two rows to keep (resolve the entry instead)", ErrNotOffered, what, missing)
	case sharedEqual(mrow, orow):
		return nil, fmt.Errorf("%w: keep both: %s holds the same row on %s and %s: nothing to keep apart (resolve or dismiss the entry)", ErrNotOffered, what, mv.Name, other.Name)
	}
	ka, ok := mv.Applier.(KeyAllocator)
	if !ok {
		return nil, fmt.Errorf("%w: keep both: %s's Applier (%T) cannot draw keys from a sequence: give %s's row a new key by hand, then retry the entry",
			ErrNotOffered, mv.Name, mv.Applier, what)
	}
	nk, err := ka.NewKey(ctx, t, k)
	if err != nil {
		return nil, fmt.Errorf("duplex: keep both %s on %s: %w", what, mv.Name, err)
	}
	return nk, nil
}

// sharedEqual reports whether a and b hold equal values in the fields
// both have.
func sharedEqual(a, b Values) bool {
	for f, v := range a {
		if w, ok := b[f]; ok && !Equal(v, w) {
			return false
		}
	}
	return true
}

// KeepBoth keeps both rows of a key that holds different rows on the two
// sides (dl, an insert-insert conflict held in the DLQ): the row of side
// move (an endpoint name, or "a"/"b") gets the key newKey (drawn with
// NewKey) on both sides, the other side's row keeps the key on both
// sides. It writes each side in one transaction with its agreement
// records: first the moved side (the row moved to newKey, the other side's
// row inserted under the old key), then the other side (the moved row
// inserted under newKey).
//
// It is idempotent for a given newKey: each side's write carries an ID
// derived from the entry, the key and newKey, recorded in that side's
// ledger, so a call repeated after a crash between the two commits
// finishes the second and never writes a third row. Call it again with the
// same newKey after any error but ErrKeyTaken and ErrNotOffered (nothing
// written: draw a new key, or do something else). A row changed since it
// was read makes it fail with ErrNewerData, writing nothing.
func (s *Sync) KeepBoth(ctx context.Context, dl *DeadLetter, move string, newKey Key) (ActionResult, error) {
	if err := s.refuseWhileOnboarding("duplex: keep both " + deadLetterKey(dl)); err != nil {
		return ActionResult{}, err
	}
	if _, err := s.pipeline(dl); err != nil {
		return ActionResult{}, err
	}
	if err := refuseUnique(dl, "keep both"); err != nil {
		return ActionResult{}, err
	}
	mv, other, err := s.endpoint(move)
	if err != nil {
		return ActionResult{}, err
	}
	t, k := dl.Change.Table, dl.Change.Key
	if err := checkNewKey(t, k, newKey); err != nil {
		return ActionResult{}, err
	}
	what := fmt.Sprintf("%s: %s's row %s", t, mv.Name, k)
	defer s.ab.locks.lock([]string{orderKey(&Change{Table: t, Key: k}), orderKey(&Change{Table: t, Key: newKey})})()
	id := "keep-both:" + s.cfg.Name + ":" + t.String() + ":" + k.String() + "->" + newKey.String() + ":"
	done, err := s.inLedger(ctx, other, id+other.Name)
	if err != nil {
		return ActionResult{}, err
	}
	if done {
		return ActionResult{Outcome: OutcomeUnchanged, Detail: what + " is " + newKey.String() + " on both sides already"}, nil
	}
	moved, err := s.inLedger(ctx, mv, id+mv.Name)
	if err != nil {
		return ActionResult{}, err
	}
	rows, err := keepBothRows(ctx, mv, other, t, k, newKey)
	if err != nil {
		return ActionResult{}, err
	}
	kept := rows[1][0] // the other side's row, which keeps k
	var row Values     // the moved row, under newKey
	if !moved {
		switch {
		case rows[0][0] == nil || kept == nil:
			return ActionResult{}, fmt.Errorf("%w: %s %s has no row on one side any more", ErrNewerData, t, k)
		case rows[0][1] != nil || rows[1][1] != nil:
			side := mv.Name
			if rows[0][1] == nil {
				side = other.Name
			}
			return ActionResult{}, fmt.Errorf("%w: %s %s holds a row on %s already; nothing was written: draw another key (the sequences of both sides hand out the same values: set them apart, pgbisync -sequences interleave)",
				ErrKeyTaken, t, newKey, side)
		}
		row = withKey(rows[0][0], newKey)
		if err := s.moveRow(ctx, mv, other.Name, t, k, newKey, rows[0][0], kept, row, id+mv.Name); err != nil {
			return ActionResult{}, err
		}
	} else {
		if row = rows[0][1]; row == nil {
			return ActionResult{}, fmt.Errorf("%w: %s was moved to %s on %s, and that row is gone since", ErrNewerData, what, newKey, mv.Name)
		}
		if kept == nil {
			kept = rows[0][0]
		}
	}
	if cur := rows[1][1]; cur != nil && !sharedEqual(cur, row) {
		return ActionResult{}, fmt.Errorf("duplex: keep both %s: moved to %s on %s, but %s holds another row under %s: move one of them by hand",
			what, newKey, mv.Name, other.Name, newKey)
	}
	if err := s.keepOnOther(ctx, mv, other, t, k, newKey, kept, row, rows[1][1] == nil, id+other.Name); err != nil {
		return ActionResult{}, fmt.Errorf("duplex: keep both %s: moved to %s on %s; writing it to %s failed (run it again with the same key): %w", what, newKey, mv.Name, other.Name, err)
	}
	s.cfg.Logger.InfoContext(ctx, "dead letter kept both", "sync", s.cfg.Name, "table", t.String(), "key", k.String(), "new_key", newKey.String(), "moved", mv.Name)
	return ActionResult{Outcome: OutcomeApplied, Detail: fmt.Sprintf("%s is %s on both sides; %s's row keeps %s on both sides", what, newKey, other.Name, k)}, nil
}

// checkNewKey refuses a new key that is not another value of k's columns.
func checkNewKey(t Table, k, newKey Key) error {
	if len(newKey) != len(k) || newKey.String() == k.String() {
		return fmt.Errorf("duplex: keep both %s %s: the new key %s is not another value of the key columns", t, k, newKey)
	}
	for i := range k {
		if k[i].Name != newKey[i].Name {
			return fmt.Errorf("duplex: keep both %s %s: the new key %s names other columns", t, k, newKey)
		}
	}
	return nil
}

// keepBothRows reads the rows of k and newKey on both sides:
// [mv, other][k, newKey].
func keepBothRows(ctx context.Context, mv, other *Endpoint, t Table, k, newKey Key) (rows [2][2]Values, err error) {
	for i, e := range []*Endpoint{mv, other} {
		for j, key := range []Key{k, newKey} {
			if rows[i][j], _, err = lookupOne(ctx, e, t, key); err != nil {
				return rows, err
			}
		}
	}
	return rows, nil
}

// keepOnOther writes the other side of a keep-both in one transaction:
// the moved row under newKey (insert: it holds none yet) and the records
// of both keys; id is the write's ID in the other side's ledger.
func (s *Sync) keepOnOther(ctx context.Context, mv, other *Endpoint, t Table, k, newKey Key, kept, row Values, insert bool, id string) error {
	recK, err := s.nextAgreement(ctx, t, k, kept)
	if err != nil {
		return err
	}
	recN, err := s.nextAgreement(ctx, t, newKey, row)
	if err != nil {
		return err
	}
	b := &Batch{Source: mv.Name, Agreements: []AgreementWrite{{Table: t, Key: k, Agreement: recK}, {Table: t, Key: newKey, Agreement: recN}}}
	if insert {
		b.Writes = []Write{{Op: OpInsert, Table: t, Key: newKey, Set: row.Clone(),
			Change: &Change{ID: id, Source: mv.Name, Table: t, Key: newKey, Op: OpInsert, After: row, CommitTime: time.Now()}}}
	}
	if err := s.recordsOf(other).apply(ctx, b); err != nil {
		if errors.Is(err, ErrStale) {
			return fmt.Errorf("%w: %s %s on %s changed while it was written", ErrNewerData, t, newKey, other.Name)
		}
		return err
	}
	return nil
}

// moveRow writes the moved side mv of a keep-both in one transaction: its
// row cur moves from k to newKey, the other side's row kept takes k, and
// both keys get their agreement records.
func (s *Sync) moveRow(ctx context.Context, mv *Endpoint, from string, t Table, k, newKey Key, cur, kept, row Values, id string) error {
	recK, err := s.nextAgreement(ctx, t, k, kept)
	if err != nil {
		return err
	}
	recN, err := s.nextAgreement(ctx, t, newKey, row)
	if err != nil {
		return err
	}
	set := Values{}
	for _, c := range newKey {
		set[c.Name] = c.Value
	}
	ch := &Change{ID: id, Source: from, Table: t, Key: k, Op: OpUpdate, After: kept, CommitTime: time.Now()}
	b := &Batch{Source: from,
		Writes: []Write{
			{Op: OpUpdate, Table: t, Key: k, Set: set, Expect: cur.Clone(), Change: ch},
			{Op: OpInsert, Table: t, Key: k, Set: onlyColumns(kept, cur), Change: ch},
		},
		Agreements: []AgreementWrite{{Table: t, Key: k, Agreement: recK}, {Table: t, Key: newKey, Agreement: recN}}}
	if err := s.recordsOf(mv).apply(ctx, b); err != nil {
		if errors.Is(err, ErrStale) {
			return fmt.Errorf("%w: %s %s on %s changed while it was moved; nothing was written", ErrNewerData, t, k, mv.Name)
		}
		if ue, ok := errors.AsType[*UniqueError](err); ok {
			return fmt.Errorf("%w: keep both %s %s: the two rows share %s under unique constraint %s, so %s cannot hold both: change it on one of them, then keep both again (nothing was written)",
				ErrNotOffered, t, k, ue.Unique.ValuesText(), ue.Unique.Constraint, mv.Name)
		}
		return fmt.Errorf("duplex: keep both %s %s: move %s's row to %s: %w", t, k, mv.Name, newKey, err)
	}
	return nil
}

// withKey returns row with its key columns set to k.
func withKey(row Values, k Key) Values {
	out := row.Clone()
	for _, c := range k {
		out[c.Name] = c.Value
	}
	return out
}

// onlyColumns returns the fields of row that cols has (a column only the
// other side has is left out).
func onlyColumns(row, cols Values) Values {
	out := make(Values, len(row))
	for f, v := range row {
		if _, ok := cols[f]; ok {
			out[f] = v
		}
	}
	return out
}

// inLedger reports whether e's ledger holds id (false when e keeps none).
func (s *Sync) inLedger(ctx context.Context, e *Endpoint, id string) (bool, error) {
	l, ok := e.Applier.(Ledger)
	if !ok {
		return false, nil
	}
	done, err := l.Applied(ctx, []string{id})
	if err != nil {
		return false, fmt.Errorf("duplex: ask %s's ledger: %w", e.Name, err)
	}
	return len(done) == 1 && done[0], nil
}
