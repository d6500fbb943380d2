// Operator actions, Sync side: Retry, Resolve and Reconcile of one dead-lettered change
// or one key, through the same records and locks as the Pipelines.

package duplex

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Retry runs a dead-lettered change through its direction's Pipeline again
// (see Pipeline.Replay): loop guard, the target's ledger, the Resolver
// against the target's current row, apply. Older data never blindly
// overwrites newer: the change is checked against the target's current row
// like any other, so a row changed since is a conflict for the resolvers
// (OutcomeKeptTarget when they keep it). The Pipeline must be running.
func (s *Sync) Retry(ctx context.Context, dl *DeadLetter) (ActionResult, error) {
	p, err := s.pipeline(dl)
	if err != nil {
		return ActionResult{}, err
	}
	if dl.Conflict != nil && dl.Conflict.Kind == UniqueCollision && dl.Conflict.Unique != nil {
		return s.retryUnique(ctx, p, dl)
	}
	return p.Replay(ctx, &dl.Change)
}

func (s *Sync) pipeline(dl *DeadLetter) (*Pipeline, error) {
	if dl == nil {
		return nil, errors.New("duplex: no dead letter")
	}
	if dl.Sync != "" && dl.Sync != s.cfg.Name {
		return nil, fmt.Errorf("duplex: the dead letter belongs to sync %q, not %q", dl.Sync, s.cfg.Name)
	}
	for _, p := range []*Pipeline{s.ab, s.ba} {
		if p.dir == dl.Direction {
			return p, nil
		}
	}
	return nil, fmt.Errorf("duplex: sync %q has no direction %s", s.cfg.Name, dl.Direction)
}

// endpoint returns the endpoint named name; "a" and "b" also name A and B.
func (s *Sync) endpoint(name string) (win, lose *Endpoint, err error) {
	a, b := &s.cfg.A, &s.cfg.B
	switch {
	case name == a.Name || (name == "a" && b.Name != "a"):
		return a, b, nil
	case name == b.Name || (name == "b" && a.Name != "b"):
		return b, a, nil
	}
	return nil, nil, fmt.Errorf("duplex: unknown winner %q: want %q or %q (or a/b)", name, a.Name, b.Name)
}

// Resolve settles a dead-lettered change by choosing a side: the winner's
// current row is copied to the loser (only the fields that differ; an
// insert or a delete when the row exists on one side only), so that both
// sides hold the winner's version. winner is an endpoint name, or "a"/"b".
//
// If the loser's row no longer holds what the dead letter recorded for it
// (someone changed it since), nothing is written and the error matches
// ErrNewerData. The write carries an ID derived from the entry, recorded in
// the loser's ledger, so resolving twice writes once.
func (s *Sync) Resolve(ctx context.Context, dl *DeadLetter, winner string) (ActionResult, error) {
	if err := s.refuseWhileOnboarding("duplex: resolve " + deadLetterKey(dl)); err != nil {
		return ActionResult{}, err
	}
	if _, err := s.pipeline(dl); err != nil {
		return ActionResult{}, err
	}
	if err := refuseUnique(dl, "resolve"); err != nil {
		return ActionResult{}, err
	}
	win, lose, err := s.endpoint(winner)
	if err != nil {
		return ActionResult{}, err
	}
	ch := &dl.Change
	what := ch.Table.String() + " " + ch.Key.String()
	defer s.lockKey(ch.Table, ch.Key)()
	wrow, _, err := lookupOne(ctx, win, ch.Table, ch.Key)
	if err != nil {
		return ActionResult{}, err
	}
	lrow, _, err := lookupOne(ctx, lose, ch.Table, ch.Key)
	if err != nil {
		return ActionResult{}, err
	}
	// What the entry recorded of the loser's row.
	var recorded Values
	known := false
	switch {
	case lose.Name == dl.Direction.From:
		recorded, known = ch.After, true
	case dl.Conflict != nil:
		recorded, known = dl.Conflict.Target, true
	}
	if known {
		if recorded == nil && lrow != nil || recorded != nil && lrow == nil {
			return ActionResult{}, fmt.Errorf("%w: %s on %s %s since the entry was recorded", ErrNewerData, what, lose.Name, existence(lrow))
		}
		var changed []string
		for f, v := range recorded {
			if cur, ok := lrow[f]; ok && !Equal(cur, v) && !Equal(cur, wrow[f]) {
				changed = append(changed, f)
			}
		}
		if len(changed) > 0 {
			slices.Sort(changed)
			return ActionResult{}, fmt.Errorf("%w: %s on %s changed field(s) %s since the entry was recorded; its newer data is kept (retry the entry or dismiss it)",
				ErrNewerData, what, lose.Name, strings.Join(changed, ", "))
		}
	}
	rec, err := s.nextAgreement(ctx, ch.Table, ch.Key, wrow)
	if err != nil {
		return ActionResult{}, err
	}
	id := "resolve:" + ch.ID + ":" + win.Name
	fields, err := s.copyRow(ctx, win.Name, lose, ch.Table, ch.Key, wrow, lrow, id, rec)
	if errors.Is(err, ErrStale) {
		return ActionResult{}, fmt.Errorf("%w: %s on %s changed while it was being resolved", ErrNewerData, what, lose.Name)
	}
	if err != nil {
		return ActionResult{}, err
	}
	if err := s.record(ctx, win, ch.Table, ch.Key, rec); err != nil {
		return ActionResult{}, err
	}
	if fields == nil {
		return ActionResult{Outcome: OutcomeUnchanged, Detail: fmt.Sprintf("%s: %s already holds %s's version", what, lose.Name, win.Name)}, nil
	}
	s.cfg.Logger.InfoContext(ctx, "dead letter resolved", "sync", s.cfg.Name, "table", ch.Table.String(), "key", ch.Key.String(), "winner", win.Name)
	return ActionResult{Outcome: OutcomeApplied, Detail: fmt.Sprintf("%s: copied %s from %s to %s", what, strings.Join(fields, ", "), win.Name, lose.Name)}, nil
}

func existence(row Values) string {
	if row == nil {
		return "was deleted"
	}
	return "was created"
}

// lookupOne reads one row through an endpoint's Applier, removing the commit
// time field (returned separately).
func lookupOne(ctx context.Context, e *Endpoint, t Table, k Key) (Values, time.Time, error) {
	rows, err := e.Applier.Lookup(ctx, t, []Key{k})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("duplex: read %s %s on %s: %w", t, k, e.Name, err)
	}
	if len(rows) != 1 {
		return nil, time.Time{}, fmt.Errorf("duplex: read %s %s on %s: %d rows for 1 key", t, k, e.Name, len(rows))
	}
	row := rows[0]
	var at time.Time
	if v, ok := row[CommitTimeField]; ok {
		at, _ = v.(time.Time)
		row = row.Clone()
		delete(row, CommitTimeField)
	}
	return row, at, nil
}

// copyRow makes the row of to equal want (nil: deleted), given its current
// row cur, in one Apply with compare-and-set expectations. It returns the
// fields written (nil when nothing differed). id is recorded in the
// target's ledger; a write whose id is already there is not repeated.
func (s *Sync) copyRow(ctx context.Context, from string, to *Endpoint, t Table, k Key, want, cur Values, id string, rec Agreement) ([]string, error) {
	w := Write{Table: t, Key: k}
	var fields []string
	switch {
	case want == nil && cur == nil:
		return nil, s.record(ctx, to, t, k, rec)
	case want == nil:
		w.Op, w.Expect = OpDelete, cur
		fields = []string{"(row deleted)"}
	case cur == nil:
		w.Op, w.Set = OpInsert, want.Clone()
		fields = []string{"(row created)"}
	default:
		for f, v := range want {
			c, ok := cur[f]
			if !ok || Equal(c, v) {
				continue
			}
			if w.Set == nil {
				w.Set, w.Expect = Values{}, Values{}
			}
			w.Op = OpUpdate
			w.Set[f], w.Expect[f] = v, c
			fields = append(fields, f)
		}
		if fields == nil {
			return nil, s.record(ctx, to, t, k, rec)
		}
		slices.Sort(fields)
	}
	// The ID depends on what is written, so a different decision later is
	// a different write.
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%v\x00%v", id, w.Set, w.Expect)
	id = id + ":" + hex.EncodeToString(h.Sum(nil)[:8])
	if l, ok := to.Applier.(Ledger); ok {
		done, err := l.Applied(ctx, []string{id})
		if err != nil {
			return nil, fmt.Errorf("duplex: ask %s's ledger: %w", to.Name, err)
		}
		if len(done) == 1 && done[0] {
			return fields, s.record(ctx, to, t, k, rec)
		}
	}
	w.Change = &Change{ID: id, Source: from, Table: t, Key: k, Op: w.Op, After: want, CommitTime: time.Now()}
	b := &Batch{Writes: []Write{w}, Agreements: []AgreementWrite{{Table: t, Key: k, Agreement: rec}}, Source: from}
	if err := s.recordsOf(to).apply(ctx, b); err != nil {
		return nil, fmt.Errorf("duplex: write %s %s to %s: %w", t, k, to.Name, err)
	}
	return fields, nil
}

// Reconcile repairs one row that differs between the two sides (found by a
// parity check, or present on both before the sync started): it reads both
// rows and decides through the sync's Resolver, as a conflict without a
// common base (every differing field is contested, like an insert-insert
// conflict seen from A), then writes the decided row to whichever sides
// differ from it, with compare-and-set expectations. A row that exists on
// one side only is copied to the other (nothing is deleted: without a
// history nobody can tell a delete from a missing insert). Fields the
// Resolver leaves undecided send the row to the DeadLetterSink
// (OutcomeDeadLettered), both sides untouched. A row changed during the
// repair is reported as ErrStale; run Reconcile again.
func (s *Sync) Reconcile(ctx context.Context, t Table, k Key) (ActionResult, error) {
	if err := s.refuseWhileOnboarding("duplex: reconcile " + t.String() + " " + k.String()); err != nil {
		return ActionResult{}, err
	}
	a, b := &s.cfg.A, &s.cfg.B
	what := t.String() + " " + k.String()
	defer s.lockKey(t, k)()
	arow, aat, err := lookupOne(ctx, a, t, k)
	if err != nil {
		return ActionResult{}, err
	}
	brow, bat, err := lookupOne(ctx, b, t, k)
	if err != nil {
		return ActionResult{}, err
	}
	switch {
	case arow == nil && brow == nil:
		return ActionResult{Outcome: OutcomeUnchanged, Detail: what + " exists on neither side"}, nil
	case brow == nil:
		return s.copyOneSided(ctx, a, b, t, k, arow, what)
	case arow == nil:
		return s.copyOneSided(ctx, b, a, t, k, brow, what)
	}
	d, err := s.decideRows(ctx, t, k, arow, brow, aat, bat, "reconcile")
	if err != nil {
		return ActionResult{}, err
	}
	switch {
	case d.same:
		rec, err := s.nextAgreement(ctx, t, k, arow)
		if err != nil {
			return ActionResult{}, err
		}
		for _, e := range []*Endpoint{b, a} {
			if err := s.record(ctx, e, t, k, rec); err != nil {
				return ActionResult{}, err
			}
		}
		return ActionResult{Outcome: OutcomeUnchanged, Detail: what + " is the same on both sides"}, nil
	case d.held != nil:
		if err := s.cfg.DeadLetters.Put(ctx, d.held); err != nil {
			return ActionResult{}, fmt.Errorf("duplex: dead-letter %s: %w", what, err)
		}
		return ActionResult{Outcome: OutcomeDeadLettered, Detail: what + ": " + d.held.Error}, nil
	}
	return s.writeDecided(ctx, t, k, arow, brow, &d, what)
}

// copyOneSided copies row, which only from holds, to to, and records the
// agreement on both.
func (s *Sync) copyOneSided(ctx context.Context, from, to *Endpoint, t Table, k Key, row Values, what string) (ActionResult, error) {
	rec, err := s.nextAgreement(ctx, t, k, row)
	if err != nil {
		return ActionResult{}, err
	}
	if _, err := s.copyRow(ctx, from.Name, to, t, k, row, nil, "reconcile:"+s.cfg.Name+":"+what, rec); err != nil {
		return ActionResult{}, err
	}
	if err := s.record(ctx, from, t, k, rec); err != nil {
		return ActionResult{}, err
	}
	return ActionResult{Outcome: OutcomeApplied, Detail: fmt.Sprintf("%s: copied the row from %s to %s", what, from.Name, to.Name)}, nil
}

// writeDecided writes the rows d decided to both systems, B first, with
// their agreement record.
func (s *Sync) writeDecided(ctx context.Context, t Table, k Key, arow, brow Values, d *rowsDecision, what string) (ActionResult, error) {
	a, b := &s.cfg.A, &s.cfg.B
	rec, err := s.nextAgreement(ctx, t, k, d.forA)
	if err != nil {
		return ActionResult{}, err
	}
	toB, err := s.copyRow(ctx, a.Name, b, t, k, d.forB, brow, d.change.ID, rec)
	if err != nil {
		return ActionResult{}, err
	}
	toA, err := s.copyRow(ctx, b.Name, a, t, k, d.forA, arow, d.change.ID, rec)
	if err != nil {
		return ActionResult{}, err
	}
	if toA == nil && toB == nil {
		return ActionResult{Outcome: OutcomeUnchanged, Detail: what + " is the same on both sides"}, nil
	}
	outcome := OutcomeApplied
	if d.decided > 0 && toA != nil {
		outcome = OutcomeMerged
	}
	var parts []string
	if toB != nil {
		parts = append(parts, fmt.Sprintf("wrote %s to %s", strings.Join(toB, ", "), b.Name))
	}
	if toA != nil {
		parts = append(parts, fmt.Sprintf("wrote %s to %s", strings.Join(toA, ", "), a.Name))
	}
	return ActionResult{Outcome: outcome, Detail: what + ": " + strings.Join(parts, "; ")}, nil
}

// lockKey locks key k of t against the merges of both directions and
// returns the function that unlocks it.
func (s *Sync) lockKey(t Table, k Key) func() {
	return s.ab.locks.lock([]string{orderKey(&Change{Table: t, Key: k})})
}

// recordsOf returns endpoint e's system with its agreement records.
func (s *Sync) recordsOf(e *Endpoint) records {
	if e.Name == s.cfg.A.Name {
		return s.ba.target
	}
	return s.ab.target
}

// nextAgreement returns the record of an operator action that leaves both
// systems holding row (nil: neither has it): one version past both
// systems' records of k, so that the next merge takes row as its base. The
// caller holds the key's lock.
func (s *Sync) nextAgreement(ctx context.Context, t Table, k Key, row Values) (Agreement, error) {
	var v uint64
	for _, e := range []*Endpoint{&s.cfg.A, &s.cfg.B} {
		as, err := s.recordsOf(e).load(ctx, t, []Key{k})
		if err != nil {
			return Agreement{}, fmt.Errorf("duplex: read the agreed row of %s %s on %s: %w", t, k, e.Name, err)
		}
		if len(as) != 1 {
			return Agreement{}, fmt.Errorf("duplex: read the agreed row of %s %s on %s: %d records for 1 key", t, k, e.Name, len(as))
		}
		v = max(v, as[0].Version)
	}
	return Agreement{Known: true, Version: v + 1, Row: row, Peer: row}, nil
}

// record writes rec as e's agreement record of k, for a system the action
// did not write to (a system it wrote to gets the record with the write).
func (s *Sync) record(ctx context.Context, e *Endpoint, t Table, k Key, rec Agreement) error {
	b := &Batch{Agreements: []AgreementWrite{{Table: t, Key: k, Agreement: rec}}, Source: e.Name}
	if err := s.recordsOf(e).apply(ctx, b); err != nil {
		return fmt.Errorf("duplex: record the agreed row of %s %s on %s: %w", t, k, e.Name, err)
	}
	return nil
}

// rowsDecision is what the Resolver made of a key both sides hold with
// different rows and no common base (decideRows).
type rowsDecision struct {
	// same: the rows do not differ; nothing else is set.
	same bool
	// held: the Resolver left fields undecided; the entry to dead-letter
	// (both rows in its Conflict). forA and forB are then nil.
	held *DeadLetter
	// forB is the decided row for B (B's columns only: a column only one
	// side has is left alone); forA the decided row for A.
	forB, forA Values
	// decided counts the fields the Resolver decided for B's value.
	decided int
	// change is the synthetic change the conflict was detected on.
	change *Change
}

// decideRows decides a key that both sides hold, as a conflict without a
// common base (every differing field is contested, like an insert-insert
// conflict seen from A), through the sync's Resolver. what prefixes the
// IDs of the changes and dead letters ("reconcile", "onboarding").
func (s *Sync) decideRows(ctx context.Context, t Table, k Key, arow, brow Values, aat, bat time.Time, what string) (rowsDecision, error) {
	a, b := &s.cfg.A, &s.cfg.B
	name := t.String() + " " + k.String()
	dir := Direction{From: a.Name, To: b.Name}
	ch := &Change{Source: a.Name, Table: t, Key: k, Op: OpInsert, After: arow, CommitTime: aat}
	var c Conflict
	if !c.detect(dir, ch, brow) {
		return rowsDecision{same: true}, nil
	}
	// The ID names the two rows: a later run that finds them again
	// makes the same dead letter.
	h := sha256.New()
	fmt.Fprintf(h, "%v\x00%v", arow, brow)
	ch.ID = what + ":" + s.cfg.Name + ":" + name + ":" + hex.EncodeToString(h.Sum(nil)[:8])
	c.TargetTime = bat
	if s.cfg.Resolver != nil {
		if err := s.cfg.Resolver.Resolve(ctx, &c); err != nil {
			return rowsDecision{}, fmt.Errorf("duplex: resolver on %s: %w", name, err)
		}
	}
	var undecided []string
	merged := arow.Clone()
	decided := 0
	for i := range c.fields {
		f := &c.fields[i]
		switch f.pick {
		case TakeSource:
		case KeepTarget:
			merged[f.name] = brow[f.name]
			decided++
		case UseValue:
			merged[f.name] = f.value
			decided++
		default:
			if f.conflicting {
				undecided = append(undecided, f.name)
			}
		}
	}
	if c.deadLetter != "" || len(undecided) > 0 {
		reason := c.deadLetter
		if reason == "" {
			reason = fmt.Sprintf("%s: %s differs on %s and no resolver decided field(s) %s", what, name, strings.Join(c.Conflicting(), ", "), strings.Join(undecided, ", "))
		}
		return rowsDecision{change: ch, held: &DeadLetter{
			Sync: s.cfg.Name, Direction: dir, Change: *ch, Reason: ReasonConflict, Error: reason,
			Conflict: &ConflictInfo{Kind: c.Kind, Fields: c.Conflicting(), Source: arow.Clone(), Target: brow.Clone(), DecidedBy: c.by, Merge: true},
			At:       time.Now(),
		}}, nil
	}
	// Columns only one side has (schema drift) are left alone.
	for f := range merged {
		if _, ok := brow[f]; !ok {
			delete(merged, f)
		}
	}
	mergedA := arow.Clone()
	for f, v := range merged {
		mergedA[f] = v
	}
	return rowsDecision{forB: merged, forA: mergedA, decided: decided, change: ch}, nil
}
