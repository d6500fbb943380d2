// Merge base (two-way planning): which row a merge compares both systems' rows with,
// chosen from their agreement records, and the agreement a merge records.

package duplex

import "slices"

// unknownValue stands, in a merge base, for a field whose agreed value is
// not known. It equals no value, so detection sees the field changed on
// both sides (a conflict, or converged when both hold the same value), and
// Conflict.BaseValue reports it as absent: a resolver adding deltas never
// computes from it.
type unknownValue struct{}

// mergeBase is the base a merge compares both systems' rows with.
type mergeBase struct {
	// row is the base row (nil: the row did not exist), with unknownValue
	// for the fields whose agreed value is not known.
	row Values
	// guessed is set when neither system holds a record of the key: row is
	// then built from the rows and the triggering change's before image.
	guessed bool
}

// chooseBase returns the base of a merge from the two systems' agreement
// records (onT, the target's; onS, the source's), the source's row x, the
// target's row y and the key's first change in the chunk.
//
// Records of the same version describe a merge both systems committed: its
// row is the base. When one record is older, the newer merge committed on
// one system only; its record's Peer is what that merge took from the
// lagging system, which is the base both rows are compared with: the
// lagging system's later edits show as its own, and what the merge decided
// (already on the other system) as the other's. Without any record the base
// is guessed (guessBase).
func chooseBase(first *Change, x, y Values, onT, onS Agreement) mergeBase {
	var a Agreement
	var row Values
	switch {
	case !onT.Known && !onS.Known:
		return mergeBase{row: guessBase(first, x, y), guessed: true}
	case onT.Version == onS.Version:
		a, row = onT, onT.Row
	case onT.Version > onS.Version:
		a, row = onT, onT.Peer
	default:
		a, row = onS, onS.Peer
	}
	if row == nil || len(a.Unknown) == 0 {
		return mergeBase{row: row}
	}
	row = row.Clone()
	for _, f := range a.Unknown {
		row[f] = unknownValue{}
	}
	return mergeBase{row: row}
}

// guessBase builds a base for a key neither system holds a record of (a row
// both held before the sync started, or records a MemoryAgreements forgot).
// Where both rows exist it decides field by field: a field both hold alike
// is agreed; a field the triggering change's before image covers takes
// that value (the source changed the field if it moved away from it, the
// target if it holds another value); any other difference is unknown (a
// conflict, never a base for a delta). Where a row is missing, the change's
// before image (or, for an insert, no row) is the base. Resolvers are told
// the base is a guess (Conflict.BaseUncertain): those that pick a side
// decide as usual, those that add deltas refuse.
func guessBase(first *Change, x, y Values) Values {
	switch {
	case first.Op == OpInsert:
		return nil
	case x == nil || y == nil:
		if first.Before != nil {
			return first.Before
		}
		return y
	}
	before := first.Before
	base := make(Values, len(y))
	for f, yv := range y {
		xv, ok := x[f]
		if !ok || Equal(xv, yv) {
			base[f] = yv
			continue
		}
		if bv, ok := before[f]; ok {
			base[f] = bv
			continue
		}
		base[f] = unknownValue{}
	}
	for f, xv := range x {
		if _, ok := y[f]; !ok {
			base[f] = xv // a column only the source has: not at stake
		}
	}
	return base
}

// recordsHold reports whether a merge that writes no row needs no record
// either: the record the next merge would take its base from (the newer
// one, the target's when equal) already holds the agreed row and unknown
// fields, and, when the versions differ, takes in the source's row
// absorbedX as a new target record would (so the next merge's base is the
// same whether the record is written or not).
func recordsHold(row, absorbedX Values, unknown []string, onT, onS Agreement) bool {
	if !onT.Known && !onS.Known {
		return false
	}
	r := onT
	if onS.Version > onT.Version {
		r = onS
	}
	if !slices.Equal(r.Unknown, unknown) || (row == nil) != (r.Row == nil) || !valuesEqual(row, r.Row) {
		return false
	}
	if onT.Version == onS.Version {
		return true
	}
	return (absorbedX == nil) == (r.Peer == nil) && valuesEqual(absorbedX, r.Peer)
}

// withBase returns row with the held fields set back to their base values
// (they are not agreed, so the next merge still finds them contested), and
// the held fields whose base is unknown (left out of the row).
func withBase(row, base Values, held map[string]bool) (Values, []string) {
	if len(held) == 0 || row == nil {
		return row, nil
	}
	out := row.Clone()
	var unknown []string
	for f := range held {
		v, ok := base[f]
		switch {
		case !ok:
			delete(out, f)
		case v == (unknownValue{}):
			delete(out, f)
			unknown = append(unknown, f)
		default:
			out[f] = v
		}
	}
	slices.Sort(unknown)
	return out, unknown
}
