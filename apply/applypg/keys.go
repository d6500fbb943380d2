package applypg

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

var _ duplex.KeyAllocator = (*Applier)(nil)

// referencesQuery lists the single-column foreign keys of other tables
// (and of the table itself) that reference a table: the referencing table
// and column, and the constraint's name.
const referencesQuery = `
SELECT c.conrelid::pg_catalog.regclass::text, pg_catalog.quote_ident(a.attname), c.conname
FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f' AND c.confrelid = $1::text::pg_catalog.regclass AND cardinality(c.conkey) = 1
ORDER BY 1, 3`

// NewKey implements duplex.KeyAllocator: the next value of the sequence
// feeding table's key column (serial, bigserial or identity:
// pg_get_serial_sequence). A key of more than one column, a key no
// sequence feeds, and a row old that rows of other tables reference
// through a foreign key (whose rows would then point at the row that
// takes old's place; the sync writes with triggers off, so neither
// ON UPDATE CASCADE nor the check runs) are refused with
// duplex.ErrNotOffered and what to do instead.
func (a *Applier) NewKey(ctx context.Context, table duplex.Table, old duplex.Key) (duplex.Key, error) {
	m, err := a.meta(ctx, table)
	if err != nil {
		return nil, err
	}
	if len(m.key) != 1 {
		return nil, fmt.Errorf("%w: the key of %s on %s has %d columns; keep both draws one key column from its sequence: give the row a new key by hand, then retry the entry",
			duplex.ErrNotOffered, table, a.cfg.Target, len(m.key))
	}
	c := &m.cols[m.key[0]]
	oldText, err := m.keyTexts(old)
	if err != nil {
		return nil, err
	}
	var seq *string
	if err := a.pool.QueryRow(ctx, "SELECT pg_catalog.pg_get_serial_sequence($1, $2)", m.ident, c.name).Scan(&seq); err != nil {
		return nil, pgutil.Classify(fmt.Errorf("applypg: find the sequence of %s.%s on %s: %w", table, c.name, a.cfg.Target, err))
	}
	if seq == nil {
		return nil, fmt.Errorf("%w: the key column %s of %s on %s is not fed by a sequence or identity column, so there is no new key to draw: give the row a new key by hand (UPDATE %s SET %s = ... WHERE %s = %s), then retry the entry",
			duplex.ErrNotOffered, c.name, table, a.cfg.Target, m.ident, c.ident, c.ident, oldText[0])
	}
	if err := a.checkReferences(ctx, m, c, oldText[0]); err != nil {
		return nil, err
	}
	var n int64
	if err := a.pool.QueryRow(ctx, "SELECT pg_catalog.nextval($1::text::pg_catalog.regclass)", *seq).Scan(&n); err != nil {
		return nil, pgutil.Classify(fmt.Errorf("applypg: draw a key of %s from %s on %s: %w", table, *seq, a.cfg.Target, err))
	}
	v, err := c.decode([]byte(strconv.FormatInt(n, 10)))
	if err != nil {
		return nil, fmt.Errorf("applypg: %s.%s on %s: sequence %s gave %d: %w", table, c.name, a.cfg.Target, *seq, n, err)
	}
	return duplex.Key{{Name: c.name, Value: v}}, nil
}

// checkReferences refuses (duplex.ErrNotOffered) when rows reference the
// row of m whose key column c holds the text key.
func (a *Applier) checkReferences(ctx context.Context, m *tableMeta, c *column, key string) error {
	type ref struct{ table, column, name string }
	var refs []ref
	rows, err := a.pool.Query(ctx, referencesQuery, m.ident)
	if err == nil {
		var r ref
		_, err = pgx.ForEachRow(rows, []any{&r.table, &r.column, &r.name}, func() error { refs = append(refs, r); return nil })
	}
	if err != nil {
		return pgutil.Classify(fmt.Errorf("applypg: read the foreign keys referencing %s on %s: %w", m.table, a.cfg.Target, err))
	}
	for _, r := range refs {
		var used bool
		q := "SELECT EXISTS (SELECT FROM " + r.table + " WHERE " + r.column + " = $1::text::" + c.cast + ")"
		if err := a.pool.QueryRow(ctx, q, key).Scan(&used); err != nil {
			return pgutil.Classify(fmt.Errorf("applypg: look for rows of %s referencing %s %s=%s on %s: %w", r.table, m.table, c.name, key, a.cfg.Target, err))
		}
		if used {
			return fmt.Errorf("%w: rows of %s on %s reference %s %s=%s through %s: moving the row to a new key would leave them pointing at the row that takes its place; move the row and its references by hand, then retry the entry",
				duplex.ErrNotOffered, r.table, a.cfg.Target, m.table, c.name, key, r.name)
		}
	}
	return nil
}
