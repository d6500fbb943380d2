package memdb

import (
	"context"
	"fmt"

	"github.com/duplexsync/duplex"
)

// Applier writes to a DB as the sync would. It implements duplex.Applier,
// duplex.Checkpointer, duplex.Ledger and duplex.AgreementKeeper: each Apply
// is one transaction made under the Applier's replication origin, and
// records in that same transaction the position of the last change of each
// source it applied, the IDs of the changes it wrote and the batch's
// agreement records.
type Applier struct {
	db     *DB
	origin string
}

var (
	_ duplex.Applier         = (*Applier)(nil)
	_ duplex.Checkpointer    = (*Applier)(nil)
	_ duplex.Ledger          = (*Applier)(nil)
	_ duplex.AgreementKeeper = (*Applier)(nil)
)

// Applier returns an Applier whose writes carry origin (use a name the
// other direction's loop guard drops, such as "duplex").
func (db *DB) Applier(origin string) *Applier { return &Applier{db: db, origin: origin} }

// Lookup implements duplex.Applier.
func (a *Applier) Lookup(_ context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	a.db.mu.Lock()
	defer a.db.mu.Unlock()
	tb, ok := a.db.tables[t]
	if !ok {
		return nil, duplex.Permanent(fmt.Errorf("memdb: no table %s", t))
	}
	out := make([]duplex.Values, len(keys))
	for i, k := range keys {
		out[i] = tb.rows[k.String()].Clone()
	}
	return out, nil
}

// Apply implements duplex.Applier: all writes in one transaction, each
// checked against its expectation (duplex.ErrStale when the row moved).
func (a *Applier) Apply(ctx context.Context, b *duplex.Batch) error {
	if err := ctx.Err(); err != nil {
		return duplex.Unavailable(err)
	}
	return a.db.Do(a.origin, func(tx *Tx) error {
		for i := range b.Writes {
			if err := tx.apply(&b.Writes[i]); err != nil {
				return &duplex.BatchError{Index: i, Err: err}
			}
		}
		for i := range b.Writes {
			if c := b.Writes[i].Change; c != nil && c.ID != "" {
				if _, ok := tx.db.applied[c.ID]; !ok {
					id := c.ID
					tx.db.applied[id] = struct{}{}
					tx.undo = append(tx.undo, func() { delete(tx.db.applied, id) })
				}
			}
		}
		for _, w := range b.Agreements {
			k := w.Table.String() + "\x00" + w.Key.String()
			old, had := tx.db.agreed[k]
			tx.undo = append(tx.undo, func() {
				if had {
					tx.db.agreed[k] = old
				} else {
					delete(tx.db.agreed, k)
				}
			})
			if w.Agreement.Known {
				tx.db.agreed[k] = w.Agreement.Clone()
			} else {
				delete(tx.db.agreed, k)
			}
		}
		if b.Checkpoint != "" {
			old, had := tx.db.checkpoints[b.Source]
			tx.undo = append(tx.undo, func() {
				if had {
					tx.db.checkpoints[b.Source] = old
				} else {
					delete(tx.db.checkpoints, b.Source)
				}
			})
			tx.db.checkpoints[b.Source] = b.Checkpoint
		}
		return nil
	})
}

var errStale = duplex.ErrStale

func (tx *Tx) apply(w *duplex.Write) error {
	tb, err := tx.table(w.Table)
	if err != nil {
		return err
	}
	cur := tb.rows[w.Key.String()]
	check := func() error {
		for f, v := range w.Expect {
			if cv := cur[f]; !duplex.Equal(cv, v) { // a field never written is NULL
				return fmt.Errorf("%w: %s %s field %s", errStale, w.Table, w.Key, f)
			}
		}
		return nil
	}
	switch w.Op {
	case duplex.OpInsert:
		if cur != nil {
			return fmt.Errorf("%w: %s %s exists", errStale, w.Table, w.Key)
		}
		if k, err := tb.keyOf(w.Table, w.Set); err != nil || k.String() != w.Key.String() {
			return duplex.Permanent(fmt.Errorf("memdb: %s: insert for key %s carries key %v", w.Table, w.Key, k))
		}
		return tx.Insert(w.Table, tb.known(w.Set))
	case duplex.OpUpdate:
		if cur == nil {
			return fmt.Errorf("%w: %s %s is gone", errStale, w.Table, w.Key)
		}
		if err := check(); err != nil {
			return err
		}
		_, err := tx.Update(w.Table, w.Key, tb.known(w.Set))
		return err
	case duplex.OpDelete:
		if cur == nil {
			return nil
		}
		if err := check(); err != nil {
			return err
		}
		_, err := tx.Delete(w.Table, w.Key)
		return err
	}
	return duplex.Permanent(fmt.Errorf("memdb: %s %s: unknown op %v", w.Table, w.Key, w.Op))
}

// Applied implements duplex.Ledger: the IDs of changes whose writes
// committed through any Applier of this DB.
func (a *Applier) Applied(_ context.Context, ids []string) ([]bool, error) {
	a.db.mu.Lock()
	defer a.db.mu.Unlock()
	out := make([]bool, len(ids))
	for i, id := range ids {
		_, out[i] = a.db.applied[id]
	}
	return out, nil
}

// Checkpoint implements duplex.Checkpointer.
func (a *Applier) Checkpoint(_ context.Context, source string) (duplex.Position, error) {
	a.db.mu.Lock()
	defer a.db.mu.Unlock()
	return a.db.checkpoints[source], nil
}

// Agreements implements duplex.AgreementKeeper.
func (a *Applier) Agreements(_ context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Agreement, error) {
	a.db.mu.Lock()
	defer a.db.mu.Unlock()
	out := make([]duplex.Agreement, len(keys))
	for i, k := range keys {
		if r, ok := a.db.agreed[t.String()+"\x00"+k.String()]; ok {
			out[i] = r.Clone()
		}
	}
	return out, nil
}

// AgreeRows records every row of table t as agreed in the DB's agreement
// records (the records its Appliers keep), as if a two-way sync had
// synced them: for tests and examples that start from two replicas already
// in agreement. Rows that already have a record keep it.
func (db *DB) AgreeRows(t duplex.Table) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	tb, ok := db.tables[t]
	if !ok {
		return fmt.Errorf("memdb: no table %s", t)
	}
	for k, row := range tb.rows {
		name := t.String() + "\x00" + k
		if _, ok := db.agreed[name]; !ok {
			db.agreed[name] = duplex.Agreement{Known: true, Version: 1, Row: row.Clone(), Peer: row.Clone()}
		}
	}
	return nil
}
