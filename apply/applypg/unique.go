package applypg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// uniqueIndexQuery reads a unique index of a table by name: whether it is
// the primary key, its partial-index predicate, and its key columns in
// order ("" for an expression).
const uniqueIndexQuery = `
SELECT i.indisprimary, coalesce(pg_catalog.pg_get_expr(i.indpred, i.indrelid), ''),
	array(SELECT coalesce(a.attname, '')
		FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
		LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
		WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = $1::text::pg_catalog.regclass AND ic.relname = $2 AND i.indisunique`

// uniqueError turns the failure of a write on a unique constraint or index
// other than the primary key into a *duplex.UniqueError (inside the
// *duplex.BatchError naming the write): the constraint, its columns, the
// contested values and the target's row holding them, read after the
// failed transaction. Any other error is returned as it is; so is this
// one, without the holding row, when reading the catalog or the row
// fails.
func (a *Applier) uniqueError(ctx context.Context, b *duplex.Batch, err error) error {
	var be *duplex.BatchError
	pe, ok := errors.AsType[*pgconn.PgError](err)
	if !ok || pe.Code != "23505" || !errors.As(err, &be) || be.Index < 0 || be.Index >= len(b.Writes) {
		return err
	}
	w := &b.Writes[be.Index]
	ue, primary, rerr := a.readUnique(ctx, w, pe)
	if rerr != nil {
		a.log.DebugContext(ctx, "could not read the row holding a unique value", "table", w.Table.String(),
			"constraint", pe.ConstraintName, slog.Any("err", rerr))
	}
	if primary {
		return err
	}
	ue.Err = be.Err
	return &duplex.BatchError{Index: be.Index, Err: ue}
}

// readUnique describes the collision of write w on the index named by pe:
// its columns and values and, when they are known, the row holding them.
func (a *Applier) readUnique(ctx context.Context, w *duplex.Write, pe *pgconn.PgError) (ue *duplex.UniqueError, primary bool, err error) {
	ue = &duplex.UniqueError{Table: w.Table, Unique: duplex.UniqueInfo{Constraint: pe.ConstraintName, Detail: pe.Detail}}
	m, err := a.meta(ctx, w.Table)
	if err != nil {
		return ue, false, err
	}
	var pred string
	var cols []string
	if err := a.pool.QueryRow(ctx, uniqueIndexQuery, m.ident, pe.ConstraintName).Scan(&primary, &pred, &cols); err != nil {
		return ue, false, fmt.Errorf("applypg: read unique index %s of %s: %w", pe.ConstraintName, w.Table, err)
	}
	if primary || len(cols) == 0 || slices.Contains(cols, "") {
		return ue, primary, nil // an expression index: the detail tells the values
	}
	ue.Unique.Columns = cols
	ue.Unique.Values = duplex.Values{}
	for _, c := range cols {
		if v, ok := w.Set[c]; ok {
			ue.Unique.Values[c] = v
		}
	}
	key, err := a.holder(ctx, m, w, cols, pred)
	if err != nil || key == nil {
		return ue, false, err
	}
	rows, err := a.Lookup(ctx, w.Table, []duplex.Key{key})
	if err != nil || rows[0] == nil {
		return ue, false, err
	}
	row := rows[0]
	delete(row, duplex.CommitTimeField)
	ue.Holder, ue.Unique.HolderKey = row, key
	for _, c := range cols {
		ue.Unique.Values[c] = row[c]
	}
	return ue, false, nil
}

// holder returns the key of the row of m, other than w's, that holds the
// values w gives the columns cols of a unique index (with predicate pred,
// "" for none), or nil.
func (a *Applier) holder(ctx context.Context, m *tableMeta, w *duplex.Write, cols []string, pred string) (duplex.Key, error) {
	var args []any
	param := func(v any, c *column) (string, error) {
		s, null, err := textOf(v, c.base)
		if err != nil || null {
			return "", err
		}
		args = append(args, s)
		return "$" + strconv.Itoa(len(args)) + "::text::" + c.cast, nil
	}
	var self []string // w's own row, by key
	for _, ci := range m.key {
		c := &m.cols[ci]
		v, _ := keyValue(w.Key, c.name)
		p, err := param(v, c)
		if err != nil || p == "" {
			return nil, err
		}
		self = append(self, "x."+c.ident+" = "+p)
	}
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, ci := range m.key {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("h." + m.cols[ci].ident + "::text")
	}
	b.WriteString(" FROM " + m.ident + " AS h WHERE ")
	for _, name := range cols {
		ci, ok := m.col(name)
		if !ok {
			return nil, nil
		}
		c := &m.cols[ci]
		v, ok := w.Set[name]
		switch {
		case ok:
			p, err := param(v, c)
			if err != nil || p == "" {
				return nil, err // NULL collides with nothing
			}
			b.WriteString("h." + c.ident + " = " + p)
		case w.Op == duplex.OpUpdate:
			// Not written: the row keeps its current value.
			b.WriteString("h." + c.ident + " = (SELECT x." + c.ident + " FROM " + m.ident + " AS x WHERE " + strings.Join(self, " AND ") + ")")
		default:
			return nil, nil
		}
		b.WriteString(" AND ")
	}
	if pred != "" {
		b.WriteString("(" + pred + ") AND ")
	}
	b.WriteString("NOT EXISTS (SELECT FROM " + m.ident + " AS x WHERE " + strings.Join(self, " AND "))
	for _, ci := range m.key {
		b.WriteString(" AND x." + m.cols[ci].ident + " = h." + m.cols[ci].ident)
	}
	b.WriteString(") LIMIT 1")

	texts := make([]*string, len(m.key))
	dest := make([]any, len(m.key))
	for i := range texts {
		dest[i] = &texts[i]
	}
	found := false
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinOutputSettings); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, b.String(), args...).Scan(dest...)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return nil, pgutil.Classify(fmt.Errorf("applypg: find the row of %s holding the unique values of %s: %w", m.table, w.Key, err))
	}
	if !found {
		return nil, nil
	}
	key := make(duplex.Key, len(m.key))
	for i, ci := range m.key {
		c := &m.cols[ci]
		if texts[i] == nil {
			return nil, nil
		}
		v, err := c.decode([]byte(*texts[i]))
		if err != nil {
			return nil, fmt.Errorf("applypg: decode key column %s of %s: %w", c.name, m.table, err)
		}
		key[i] = duplex.Column{Name: c.name, Value: v}
	}
	return key, nil
}
