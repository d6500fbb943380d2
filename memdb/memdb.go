package memdb

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
)

// TableOptions describes a table.
type TableOptions struct {
	// Key lists the primary-key columns in order. Required.
	Key []string
	// Columns, when set, fixes the table's columns: rows always hold all of
	// them (nil when not written), a user write naming another column fails,
	// and an Applier ignores fields the table does not have (schema drift).
	// When empty, rows hold whatever fields were written.
	Columns []string
	// Check, when set, is run on every row written; an error rejects the
	// write like a CHECK constraint (Appliers report it as permanent).
	Check func(row duplex.Values) error
}

type table struct {
	opts TableOptions
	rows map[string]duplex.Values
}

// DB is an in-memory database. The zero value is not usable; call New.
type DB struct {
	name string
	now  func() time.Time

	mu          sync.Mutex
	tables      map[duplex.Table]*table
	log         []duplex.Change
	changed     chan struct{} // closed and replaced when the log grows
	slots       map[string]int
	checkpoints map[string]duplex.Position
	applied     map[string]struct{}
	agreed      map[string]duplex.Agreement // agreement records, by table and key
}

// New returns an empty database; name becomes the Source of its changes.
func New(name string) *DB {
	return &DB{
		name:        name,
		now:         time.Now,
		tables:      make(map[duplex.Table]*table),
		changed:     make(chan struct{}),
		slots:       make(map[string]int),
		checkpoints: make(map[string]duplex.Position),
		applied:     make(map[string]struct{}),
		agreed:      make(map[string]duplex.Agreement),
	}
}

// Name returns the database's system name.
func (db *DB) Name() string { return db.name }

// SetClock replaces the clock used for commit times.
func (db *DB) SetClock(now func() time.Time) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.now = now
}

// CreateTable creates t; creating an existing table is an error.
func (db *DB) CreateTable(t duplex.Table, opts TableOptions) error {
	if len(opts.Key) == 0 {
		return fmt.Errorf("memdb: table %s needs a primary key", t)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if _, ok := db.tables[t]; ok {
		return fmt.Errorf("memdb: table %s already exists", t)
	}
	db.tables[t] = &table{opts: opts, rows: make(map[string]duplex.Values)}
	return nil
}

// KeyOf returns row's primary key for table t.
func (db *DB) KeyOf(t duplex.Table, row duplex.Values) (duplex.Key, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	tb, ok := db.tables[t]
	if !ok {
		return nil, fmt.Errorf("memdb: no table %s", t)
	}
	return tb.keyOf(t, row)
}

func (tb *table) keyOf(t duplex.Table, row duplex.Values) (duplex.Key, error) {
	k := make(duplex.Key, len(tb.opts.Key))
	for i, c := range tb.opts.Key {
		v, ok := row[c]
		if !ok || v == nil {
			return nil, fmt.Errorf("memdb: %s: key column %s missing", t, c)
		}
		k[i] = duplex.Column{Name: c, Value: v}
	}
	return k, nil
}

func (tb *table) checkColumns(t duplex.Table, key duplex.Key, row duplex.Values) error {
	if len(tb.opts.Columns) == 0 {
		return nil
	}
	for f := range row {
		if !slices.Contains(tb.opts.Columns, f) {
			return duplex.Permanent(fmt.Errorf("memdb: %s %s: no column %q", t, key, f))
		}
	}
	return nil
}

// known returns row without the fields the table does not have.
func (tb *table) known(row duplex.Values) duplex.Values {
	if len(tb.opts.Columns) == 0 {
		return row
	}
	out := make(duplex.Values, len(row))
	for f, v := range row {
		if slices.Contains(tb.opts.Columns, f) {
			out[f] = v
		}
	}
	return out
}

// Tx is a transaction: its writes commit together, with one commit time and
// origin, or not at all.
type Tx struct {
	db      *DB
	origin  string
	pending []duplex.Change
	undo    []func()
}

// Do runs fn in a transaction made by origin ("" for a user's own write).
// If fn returns an error nothing is written.
func (db *DB) Do(origin string, fn func(tx *Tx) error) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	tx := &Tx{db: db, origin: origin}
	rollback := func() {
		for i := len(tx.undo) - 1; i >= 0; i-- {
			tx.undo[i]()
		}
	}
	defer func() {
		if r := recover(); r != nil {
			rollback()
			panic(r)
		}
	}()
	if err := fn(tx); err != nil {
		rollback()
		return err
	}
	tx.commit()
	return nil
}

func (tx *Tx) commit() {
	db := tx.db
	if len(tx.pending) == 0 {
		return
	}
	at := db.now()
	for i := range tx.pending {
		c := &tx.pending[i]
		seq := len(db.log) + 1
		c.ID = db.name + "/" + strconv.Itoa(seq)
		c.Source = db.name
		c.CommitTime = at
		c.Position = formatPos(seq)
		c.Origin = tx.origin
		db.log = append(db.log, *c)
	}
	close(db.changed)
	db.changed = make(chan struct{})
}

func formatPos(seq int) duplex.Position {
	return duplex.Position(fmt.Sprintf("%020d", seq))
}

func parsePos(p duplex.Position) (int, error) {
	if p == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(string(p))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("memdb: invalid position %q", p)
	}
	return n, nil
}

func (tx *Tx) table(t duplex.Table) (*table, error) {
	tb, ok := tx.db.tables[t]
	if !ok {
		return nil, duplex.Permanent(fmt.Errorf("memdb: no table %s", t))
	}
	return tb, nil
}

func (tx *Tx) set(tb *table, k string, row duplex.Values) {
	old, had := tb.rows[k]
	tx.undo = append(tx.undo, func() {
		if had {
			tb.rows[k] = old
		} else {
			delete(tb.rows, k)
		}
	})
	if row == nil {
		delete(tb.rows, k)
	} else {
		tb.rows[k] = row
	}
}

// Insert inserts row; the key must not exist.
func (tx *Tx) Insert(t duplex.Table, row duplex.Values) error {
	tb, err := tx.table(t)
	if err != nil {
		return err
	}
	key, err := tb.keyOf(t, row)
	if err != nil {
		return duplex.Permanent(err)
	}
	ks := key.String()
	if _, ok := tb.rows[ks]; ok {
		return duplex.Permanent(fmt.Errorf("memdb: %s %s: duplicate key", t, key))
	}
	if err := tb.checkColumns(t, key, row); err != nil {
		return err
	}
	row = row.Clone()
	for _, c := range tb.opts.Columns {
		if _, ok := row[c]; !ok {
			row[c] = nil
		}
	}
	if tb.opts.Check != nil {
		if err := tb.opts.Check(row); err != nil {
			return duplex.Permanent(fmt.Errorf("memdb: %s %s: check failed: %w", t, key, err))
		}
	}
	tx.set(tb, ks, row)
	tx.pending = append(tx.pending, duplex.Change{Table: t, Key: key, Op: duplex.OpInsert, After: row.Clone()})
	return nil
}

// Update sets fields of the row with key; it reports whether the row exists.
func (tx *Tx) Update(t duplex.Table, key duplex.Key, set duplex.Values) (bool, error) {
	tb, err := tx.table(t)
	if err != nil {
		return false, err
	}
	ks := key.String()
	old, ok := tb.rows[ks]
	if !ok {
		return false, nil
	}
	if err := tb.checkColumns(t, key, set); err != nil {
		return false, err
	}
	row := old.Clone()
	for f, v := range set {
		if slices.Contains(tb.opts.Key, f) && !duplex.Equal(v, old[f]) {
			return false, duplex.Permanent(fmt.Errorf("memdb: %s %s: cannot change key column %s", t, key, f))
		}
		row[f] = v
	}
	if tb.opts.Check != nil {
		if err := tb.opts.Check(row); err != nil {
			return false, duplex.Permanent(fmt.Errorf("memdb: %s %s: check failed: %w", t, key, err))
		}
	}
	tx.set(tb, ks, row)
	tx.pending = append(tx.pending, duplex.Change{Table: t, Key: key, Op: duplex.OpUpdate, Before: old.Clone(), After: row.Clone()})
	return true, nil
}

// Delete deletes the row with key; it reports whether it existed.
func (tx *Tx) Delete(t duplex.Table, key duplex.Key) (bool, error) {
	tb, err := tx.table(t)
	if err != nil {
		return false, err
	}
	ks := key.String()
	old, ok := tb.rows[ks]
	if !ok {
		return false, nil
	}
	tx.set(tb, ks, nil)
	tx.pending = append(tx.pending, duplex.Change{Table: t, Key: key, Op: duplex.OpDelete, Before: old.Clone()})
	return true, nil
}

// Get returns a copy of the row with key, or nil.
func (tx *Tx) Get(t duplex.Table, key duplex.Key) duplex.Values {
	tb, ok := tx.db.tables[t]
	if !ok {
		return nil
	}
	return tb.rows[key.String()].Clone()
}

// Insert inserts row in its own transaction, as a user.
func (db *DB) Insert(t duplex.Table, row duplex.Values) error {
	return db.Do("", func(tx *Tx) error { return tx.Insert(t, row) })
}

// Update updates the row with key in its own transaction, as a user; a
// missing row is an error.
func (db *DB) Update(t duplex.Table, key duplex.Key, set duplex.Values) error {
	return db.Do("", func(tx *Tx) error {
		ok, err := tx.Update(t, key, set)
		if err == nil && !ok {
			err = fmt.Errorf("memdb: %s %s: no such row", t, key)
		}
		return err
	})
}

// Delete deletes the row with key in its own transaction, as a user; a
// missing row is an error.
func (db *DB) Delete(t duplex.Table, key duplex.Key) error {
	return db.Do("", func(tx *Tx) error {
		ok, err := tx.Delete(t, key)
		if err == nil && !ok {
			err = fmt.Errorf("memdb: %s %s: no such row", t, key)
		}
		return err
	})
}

// Get returns a copy of the row with key, or nil.
func (db *DB) Get(t duplex.Table, key duplex.Key) duplex.Values {
	db.mu.Lock()
	defer db.mu.Unlock()
	tb, ok := db.tables[t]
	if !ok {
		return nil
	}
	return tb.rows[key.String()].Clone()
}

// Rows returns copies of all rows of t, by Key.String().
func (db *DB) Rows(t duplex.Table) map[string]duplex.Values {
	db.mu.Lock()
	defer db.mu.Unlock()
	tb, ok := db.tables[t]
	if !ok {
		return nil
	}
	out := make(map[string]duplex.Values, len(tb.rows))
	for k, r := range tb.rows {
		out[k] = r.Clone()
	}
	return out
}

// Changes returns a copy of the change log.
func (db *DB) Changes() []duplex.Change {
	db.mu.Lock()
	defer db.mu.Unlock()
	return slices.Clone(db.log)
}
