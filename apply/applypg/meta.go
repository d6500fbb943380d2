package applypg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
	"github.com/duplexsync/duplex/internal/pgvalue"
)

// driftRefresh is the shortest time between two catalog reads of a table
// caused by a field the cached metadata does not know (a column added on
// the target after it was cached, or schema drift).
const driftRefresh = 30 * time.Second

// column is one column of a target table, from the catalog.
type column struct {
	name      string
	ident     string // quoted
	oid       uint32 // the column's type (a domain's own OID): what pgvalue decodes by, like the source
	base      uint32 // the base type (domains resolved): what values are rendered for
	cast      string // qualified type name without typmod, for values written: too long a value fails rather than being cut
	full      string // declared type with typmod, for comparing expectations as the column stores them (rounded numerics, timestamps); not for strings and bit strings
	generated bool   // GENERATED ALWAYS AS (...) STORED: never written
	decode    func([]byte) (any, error)
}

// tableMeta is what the Applier knows about one table. It is immutable once
// built; a refresh replaces it.
type tableMeta struct {
	table  duplex.Table
	ident  string
	cols   []column
	index  map[string]int
	key    []int // column indices of the primary key, in key order
	loaded time.Time

	lookupSQL string
	stmts     sync.Map // statement key -> SQL
}

func (m *tableMeta) col(name string) (int, bool) {
	i, ok := m.index[name]
	return i, ok
}

// metaQuery reads a table's columns. It runs with search_path = pg_catalog
// so that format_type qualifies every type outside pg_catalog.
const metaQuery = `
SELECT a.attname,
	a.atttypid,
	CASE WHEN ty.typtype = 'd' THEN
		CASE WHEN bt.typtype = 'd' THEN bt.typbasetype ELSE bt.oid END
	ELSE ty.oid END,
	quote_ident(tn.nspname) || '.' || quote_ident(ty.typname),
	format_type(a.atttypid, a.atttypmod),
	coalesce((SELECT k.ord FROM unnest(pk.indkey) WITH ORDINALITY AS k(attnum, ord) WHERE k.attnum = a.attnum), 0),
	a.attgenerated <> ''
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type ty ON ty.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = ty.typnamespace
LEFT JOIN pg_type bt ON bt.oid = ty.typbasetype
LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
ORDER BY a.attnum`

// loadMeta reads table's metadata from the catalog.
func (a *Applier) loadMeta(ctx context.Context, table duplex.Table) (*tableMeta, error) {
	if table.Schema == "" || table.Name == "" {
		return nil, duplex.Permanent(fmt.Errorf("applypg: table %q is not schema-qualified", table.String()))
	}
	m := &tableMeta{table: table, ident: pgutil.QuoteTable(table), index: make(map[string]int), loaded: time.Now()}
	type keyPos struct{ pos, col int }
	var keys []keyPos
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL search_path = pg_catalog"); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, metaQuery, table.Schema, table.Name)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var c column
			var pos int
			if err := rows.Scan(&c.name, &c.oid, &c.base, &c.cast, &c.full, &pos, &c.generated); err != nil {
				return err
			}
			c.ident = pgutil.QuoteIdent(c.name)
			switch c.base {
			case oidBPChar, oidVarchar, oidBit, oidVarbit:
				// An explicit cast to a length cuts the value short: an
				// expectation too long for the column would match.
				c.full = c.cast
			}
			c.decode = pgvalue.Decoder(c.base) // a domain decodes like its base type, as the source does
			m.index[c.name] = len(m.cols)
			if pos > 0 {
				keys = append(keys, keyPos{pos, len(m.cols)})
			}
			m.cols = append(m.cols, c)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, pgutil.Classify(fmt.Errorf("applypg: read the columns of %s: %w", table, err))
	}
	if len(m.cols) == 0 {
		return nil, duplex.Permanent(fmt.Errorf("applypg: table %s does not exist on %s (or has no columns)", table, a.cfg.Target))
	}
	if len(keys) == 0 {
		return nil, duplex.Permanent(fmt.Errorf("applypg: table %s on %s has no primary key; duplex matches rows by primary key", table, a.cfg.Target))
	}
	slices.SortFunc(keys, func(x, y keyPos) int { return x.pos - y.pos })
	for _, k := range keys {
		m.key = append(m.key, k.col)
	}
	m.lookupSQL = m.buildLookup(a.commitTime)
	return m, nil
}

// meta returns the cached metadata of table, reading it when missing.
func (a *Applier) meta(ctx context.Context, table duplex.Table) (*tableMeta, error) {
	a.mu.Lock()
	m := a.tables[table]
	a.mu.Unlock()
	if m != nil {
		return m, nil
	}
	return a.refreshMeta(ctx, table, nil)
}

// refreshMeta reads table's metadata again, unless another goroutine did
// since old was handed out.
func (a *Applier) refreshMeta(ctx context.Context, table duplex.Table, old *tableMeta) (*tableMeta, error) {
	a.mu.Lock()
	if m := a.tables[table]; m != nil && m != old {
		a.mu.Unlock()
		return m, nil
	}
	a.mu.Unlock()
	m, err := a.loadMeta(ctx, table)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.tables[table] = m
	a.mu.Unlock()
	return m, nil
}

// forget drops the cached metadata of tables.
func (a *Applier) forget(tables ...duplex.Table) {
	a.mu.Lock()
	for _, t := range tables {
		delete(a.tables, t)
	}
	a.mu.Unlock()
}

// known resolves the fields of a write against m. A field the cached
// metadata does not know makes it re-read the catalog (at most every
// driftRefresh per table): the column may have been added since. A field
// the table really lacks is schema drift, logged once and dropped.
func (a *Applier) known(ctx context.Context, m *tableMeta, fields duplex.Values) (*tableMeta, error) {
	for f := range fields {
		if _, ok := m.index[f]; ok || f == duplex.CommitTimeField {
			continue
		}
		if time.Since(m.loaded) >= a.driftRefresh {
			nm, err := a.refreshMeta(ctx, m.table, m)
			if err != nil {
				return m, err
			}
			m = nm
			if _, ok := m.index[f]; ok {
				continue
			}
		}
		a.drift(ctx, m.table, f)
	}
	return m, nil
}

// drift logs, once per table and field, a field the target table lacks.
func (a *Applier) drift(ctx context.Context, t duplex.Table, field string) {
	if _, seen := a.drifted.LoadOrStore(t.String()+"\x00"+field, true); seen {
		return
	}
	a.log.WarnContext(ctx, "schema drift: field missing on the target table; ignored",
		"table", t.String(), "field", field)
}

// isSchemaChange reports errors that mean the cached metadata is out of
// date: a column or table gone, a column's type changed.
func isSchemaChange(err error) bool {
	switch pgutil.SQLState(err) {
	case "42703", "42P01", "42804", "42846":
		return true
	case "0A000":
		pe, _ := errors.AsType[*pgconn.PgError](err)
		return strings.Contains(pe.Message, "cached plan must not change result type")
	}
	var d *decodeError
	return errors.As(err, &d)
}

// decodeError is a value Lookup could not decode: the column's type may
// have changed since its metadata was read.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// buildLookup returns the Lookup query: the rows whose keys are in the
// text arrays $1..$k, each with the ordinal of its key. Each key is looked
// up on its own (a LATERAL subquery with LIMIT 1 is never turned into a
// join), so the plan is an index probe per key whatever the statistics
// say: a plain join, planned once while the table was empty or small and
// cached, can become a hash join scanning the whole table for every batch.
func (m *tableMeta) buildLookup(commitTime bool) string {
	var b strings.Builder
	b.WriteString("SELECT v.ord, l.* FROM unnest(")
	for i := range m.key {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(i+1) + "::text[]")
	}
	b.WriteString(") WITH ORDINALITY AS v(")
	for i := range m.key {
		b.WriteString("k" + strconv.Itoa(i+1) + ", ")
	}
	b.WriteString("ord) CROSS JOIN LATERAL (SELECT ")
	for i, c := range m.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("t.")
		b.WriteString(c.ident)
	}
	if commitTime {
		b.WriteString(", pg_catalog.pg_xact_commit_timestamp(t.xmin)")
	}
	b.WriteString(" FROM ")
	b.WriteString(m.ident)
	b.WriteString(" AS t WHERE ")
	for i, ci := range m.key {
		if i > 0 {
			b.WriteString(" AND ")
		}
		c := &m.cols[ci]
		b.WriteString("t." + c.ident + " = v.k" + strconv.Itoa(i+1) + "::" + c.cast)
	}
	b.WriteString(" LIMIT 1) AS l")
	return b.String()
}

// keyTexts renders key in m's key order.
func (m *tableMeta) keyTexts(key duplex.Key) ([]string, error) {
	out := make([]string, len(m.key))
	if len(key) != len(m.key) {
		return nil, m.keyMismatch(key)
	}
	for i, ci := range m.key {
		c := &m.cols[ci]
		found := false
		for _, kc := range key {
			if kc.Name != c.name {
				continue
			}
			s, null, err := textOf(kc.Value, c.base)
			if err != nil {
				return nil, duplex.Permanent(fmt.Errorf("applypg: %s key column %s: %w", m.table, c.name, err))
			}
			if null {
				return nil, duplex.Permanent(fmt.Errorf("applypg: %s key column %s is NULL", m.table, c.name))
			}
			out[i], found = s, true
			break
		}
		if !found {
			return nil, m.keyMismatch(key)
		}
	}
	return out, nil
}

func (m *tableMeta) keyMismatch(key duplex.Key) error {
	names := make([]string, len(m.key))
	for i, ci := range m.key {
		names[i] = m.cols[ci].name
	}
	got := make([]string, len(key))
	for i, c := range key {
		got[i] = c.Name
	}
	return duplex.Permanent(fmt.Errorf("applypg: key (%s) does not match the primary key (%s) of %s",
		strings.Join(got, ", "), strings.Join(names, ", "), m.table))
}
