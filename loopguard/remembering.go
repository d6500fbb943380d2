package loopguard

import (
	"context"

	"github.com/duplexsync/duplex"
)

// Remembering returns an Applier that applies through next and then tells
// h what the sync left each written row as, so h recognises the echoes.
//
// After a successful Apply it looks the written rows up again (one Lookup
// per table in the batch) and remembers, for each key, the row it finds (or
// its absence after a delete) if it still agrees with the batch's last
// write to that key: no row after a delete, and the written fields' values
// otherwise (fields the target does not have aside). A row that disagrees
// was changed by someone else in between and is not remembered, so that
// change is never taken for an echo. For a key written several times in
// one batch, the states before the last are worked out backwards from the
// writes' expectations (Write.Expect), as far as they tell them.
//
// The re-read is not atomic with the write: a user's change committed
// between Apply and Lookup that touches only fields the write did not set
// would be remembered, and dropped, as the sync's. An Applier that returns
// the rows it wrote from the same transaction could avoid that. A failed
// Lookup remembers nothing (the echoes then pass) and does not fail the
// Apply, which did succeed.
//
// While the write and the re-read are under way, h.Echo waits for changes
// to the rows being written, since the source may capture the write before
// it is remembered.
//
// The returned Applier implements each of duplex.Checkpointer,
// duplex.Ledger and duplex.Truncater exactly when next does. Its Truncate
// remembers the truncation, so h recognises the TRUNCATE coming back.
func Remembering(next duplex.Applier, h *Hashes) duplex.Applier {
	r := &remembering{next: next, h: h}
	cp, isCP := next.(duplex.Checkpointer)
	l, isL := next.(duplex.Ledger)
	tr, isT := next.(duplex.Truncater)
	t := truncater{r: r, next: tr}
	switch {
	case isCP && isL && isT:
		return struct {
			*remembering
			duplex.Checkpointer
			duplex.Ledger
			truncater
		}{r, cp, l, t}
	case isCP && isL:
		return struct {
			*remembering
			duplex.Checkpointer
			duplex.Ledger
		}{r, cp, l}
	case isCP && isT:
		return struct {
			*remembering
			duplex.Checkpointer
			truncater
		}{r, cp, t}
	case isL && isT:
		return struct {
			*remembering
			duplex.Ledger
			truncater
		}{r, l, t}
	case isCP:
		return struct {
			*remembering
			duplex.Checkpointer
		}{r, cp}
	case isL:
		return struct {
			*remembering
			duplex.Ledger
		}{r, l}
	case isT:
		return struct {
			*remembering
			truncater
		}{r, t}
	}
	return r
}

type remembering struct {
	next duplex.Applier
	h    *Hashes
}

var _ duplex.Applier = (*remembering)(nil)

// truncater adds Truncate to a remembering Applier whose next has it.
type truncater struct {
	r    *remembering
	next duplex.Truncater
}

var _ duplex.Truncater = truncater{}

// Truncate implements duplex.Truncater: next's Truncate, then remembering
// it, so that the TRUNCATE captured from it is recognised as an echo.
func (t truncater) Truncate(ctx context.Context, table duplex.Table, c *duplex.Change) error {
	keys := []string{tableKey(table)}
	h := t.r.h
	h.begin(keys)
	defer h.end(keys)
	if err := t.next.Truncate(ctx, table, c); err != nil {
		return err
	}
	h.remember(keys[0], truncated, nil)
	return nil
}

// Lookup implements duplex.Applier by calling next's.
func (r *remembering) Lookup(ctx context.Context, table duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	return r.next.Lookup(ctx, table, keys)
}

// Apply implements duplex.Applier: next's Apply, then remembering the rows
// as written.
func (r *remembering) Apply(ctx context.Context, b *duplex.Batch) error {
	keys := make([]string, 0, len(b.Writes))
	seen := make(map[string]bool, len(b.Writes))
	for i := range b.Writes {
		k := rowKey(b.Writes[i].Table, b.Writes[i].Key)
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	r.h.begin(keys)
	defer r.h.end(keys)
	if err := r.next.Apply(ctx, b); err != nil {
		return err
	}
	r.remember(ctx, b)
	return nil
}

func (r *remembering) remember(ctx context.Context, b *duplex.Batch) {
	// The writes of each key in batch order, keys grouped by table.
	type group struct {
		keys   []duplex.Key
		writes [][]*duplex.Write
	}
	var tables []duplex.Table
	groups := map[duplex.Table]*group{}
	index := map[string]int{} // row key -> index in its group
	for i := range b.Writes {
		w := &b.Writes[i]
		g := groups[w.Table]
		if g == nil {
			g = &group{}
			groups[w.Table] = g
			tables = append(tables, w.Table)
		}
		k := rowKey(w.Table, w.Key)
		if j, ok := index[k]; ok {
			g.writes[j] = append(g.writes[j], w)
			continue
		}
		index[k] = len(g.keys)
		g.keys = append(g.keys, w.Key)
		g.writes = append(g.writes, []*duplex.Write{w})
	}
	for _, t := range tables {
		g := groups[t]
		rows, err := r.next.Lookup(ctx, t, g.keys)
		if err != nil || len(rows) != len(g.keys) {
			continue
		}
		for i, ws := range g.writes {
			sts := states(ws, rows[i])
			for j, row := range sts {
				w := ws[len(ws)-len(sts)+j]
				if w.Op == duplex.OpUpdate {
					fields := make([]string, 0, len(w.Set))
					for f := range w.Set {
						fields = append(fields, f)
					}
					r.h.RememberWrite(t, g.keys[i], row, fields)
					continue
				}
				r.h.Remember(t, g.keys[i], row)
			}
		}
	}
}

// states returns the states the writes ws to one row left it in, oldest
// first, given the row found after them: none when the row disagrees with
// the last write; else the final state, preceded by the states before it
// that can be told exactly by walking back through the writes'
// expectations (an update's Expect holds the values it replaced, a
// delete's the whole row, and there was no row before an insert).
func states(ws []*duplex.Write, final duplex.Values) []duplex.Values {
	n := len(ws)
	if !agrees(ws[n-1], final) {
		return nil
	}
	out := make([]duplex.Values, n)
	out[n-1] = final
	first := n - 1
	for j := n - 1; j > 0; j-- {
		prev, ok := before(ws[j], out[j])
		if !ok || !agrees(ws[j-1], prev) {
			break
		}
		out[j-1], first = prev, j-1
	}
	return out[first:]
}

// before returns the row as it was before w made it after, when known.
func before(w *duplex.Write, after duplex.Values) (duplex.Values, bool) {
	switch w.Op {
	case duplex.OpInsert:
		return nil, true
	case duplex.OpDelete:
		return w.Expect, w.Expect != nil
	case duplex.OpUpdate:
		if w.Expect == nil || after == nil {
			return nil, false
		}
		prev := after.Clone()
		for f := range w.Set {
			v, ok := w.Expect[f]
			if !ok {
				if !duplex.Equal(prev[f], w.Set[f]) {
					return nil, false // a changed field without its old value
				}
				continue // a field the write left as it was
			}
			prev[f] = v
		}
		return prev, true
	}
	return nil, false
}

// agrees reports whether row is what w leaves: no row after a delete, the
// written values otherwise.
func agrees(w *duplex.Write, row duplex.Values) bool {
	if w.Op == duplex.OpDelete {
		return row == nil
	}
	if row == nil {
		return false
	}
	for f, v := range w.Set {
		// A field the row lacks is one the target does not have (schema
		// drift); the Applier ignored it.
		if got, ok := row[f]; ok && !duplex.Equal(got, v) {
			return false
		}
	}
	return true
}
