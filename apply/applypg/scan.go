package applypg

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

var (
	_ duplex.Scanner         = (*Applier)(nil)
	_ duplex.SnapshotScanner = (*Applier)(nil)
)

// ScanRange implements duplex.Scanner: one query reading rows in primary
// key order through the key's index, in PostgreSQL's text form decoded like
// Lookup's (so values read either way compare equal), with CommitTimeField
// when track_commit_timestamp is on.
func (a *Applier) ScanRange(ctx context.Context, t duplex.Table, after, upTo duplex.Key, limit int) ([]duplex.Key, []duplex.Values, error) {
	return a.scan(ctx, "", t, after, upTo, limit)
}

// ScanRangeAt implements duplex.SnapshotScanner: ScanRange in a REPEATABLE
// READ transaction that imports snapshot (SET TRANSACTION SNAPSHOT).
func (a *Applier) ScanRangeAt(ctx context.Context, snapshot string, t duplex.Table, after, upTo duplex.Key, limit int) ([]duplex.Key, []duplex.Values, error) {
	return a.scan(ctx, snapshot, t, after, upTo, limit)
}

func (a *Applier) scan(ctx context.Context, snapshot string, t duplex.Table, after, upTo duplex.Key, limit int) ([]duplex.Key, []duplex.Values, error) {
	m, err := a.meta(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	var b strings.Builder
	var args []any
	args = append(args, pgx.QueryResultFormats{pgx.TextFormatCode})
	b.WriteString("SELECT ")
	for i, c := range m.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("t." + c.ident)
	}
	if a.commitTime {
		b.WriteString(", pg_catalog.pg_xact_commit_timestamp(t.xmin)")
	}
	b.WriteString(" FROM " + m.ident + " AS t")
	cols := make([]string, len(m.key))
	for i, ci := range m.key {
		cols[i] = "t." + m.cols[ci].ident
	}
	tuple := "(" + strings.Join(cols, ", ") + ")"
	bound := func(k duplex.Key) (string, error) {
		texts, err := m.keyTexts(k)
		if err != nil {
			return "", err
		}
		ps := make([]string, len(texts))
		for i, s := range texts {
			args = append(args, s)
			ps[i] = "$" + strconv.Itoa(len(args)-1) + "::" + m.cols[m.key[i]].cast
		}
		return "(" + strings.Join(ps, ", ") + ")", nil
	}
	var where []string
	if after != nil {
		s, err := bound(after)
		if err != nil {
			return nil, nil, err
		}
		where = append(where, tuple+" > "+s)
	}
	if upTo != nil {
		s, err := bound(upTo)
		if err != nil {
			return nil, nil, err
		}
		where = append(where, tuple+" <= "+s)
	}
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY " + strings.Join(cols, ", "))
	if limit > 0 {
		b.WriteString(" LIMIT " + strconv.Itoa(limit))
	}
	what := func(err error) error {
		return pgutil.Classify(fmt.Errorf("applypg: scan %s on %s after %s: %w", t, a.cfg.Target, after, err))
	}
	opts := pgx.TxOptions{AccessMode: pgx.ReadOnly}
	if snapshot != "" {
		opts.IsoLevel = pgx.RepeatableRead
	}
	tx, err := a.pool.BeginTx(ctx, opts)
	if err != nil {
		return nil, nil, what(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if snapshot != "" {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(snapshot, "'", "''")+"'"); err != nil {
			return nil, nil, what(fmt.Errorf("import snapshot %s: %w", snapshot, err))
		}
	}
	if _, err := tx.Exec(ctx, pinOutputSettings); err != nil {
		return nil, nil, what(err)
	}
	rows, err := tx.Query(ctx, b.String(), args...)
	if err != nil {
		return nil, nil, what(err)
	}
	defer rows.Close()
	var keys []duplex.Key
	var out []duplex.Values
	for rows.Next() {
		raw := rows.RawValues()
		row := make(duplex.Values, len(m.cols)+1)
		for i := range m.cols {
			c := &m.cols[i]
			if raw[i] == nil {
				row[c.name] = nil
				continue
			}
			v, err := c.decode(raw[i])
			if err != nil {
				return nil, nil, duplex.Permanent(fmt.Errorf("applypg: scan %s on %s: decode column %s: %w", t, a.cfg.Target, c.name, err))
			}
			row[c.name] = v
		}
		if a.commitTime {
			if b := raw[len(m.cols)]; b != nil {
				if v, err := commitTimeDecoder(b); err == nil {
					row[duplex.CommitTimeField] = v
				}
			}
		}
		k := make(duplex.Key, len(m.key))
		for i, ci := range m.key {
			name := m.cols[ci].name
			k[i] = duplex.Column{Name: name, Value: row[name]}
		}
		keys = append(keys, k)
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, what(err)
	}
	return keys, out, nil
}

// KeyText implements duplex.Scanner: the key columns' text forms, as a JSON
// array in key order.
func (a *Applier) KeyText(ctx context.Context, t duplex.Table, k duplex.Key) (string, error) {
	m, err := a.meta(ctx, t)
	if err != nil {
		return "", err
	}
	texts, err := m.keyTexts(k)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(texts)
	return string(b), err
}

// ParseKeyText implements duplex.Scanner.
func (a *Applier) ParseKeyText(ctx context.Context, t duplex.Table, s string) (duplex.Key, error) {
	m, err := a.meta(ctx, t)
	if err != nil {
		return nil, err
	}
	var texts []string
	if err := json.Unmarshal([]byte(s), &texts); err != nil || len(texts) != len(m.key) {
		return nil, duplex.Permanent(fmt.Errorf("applypg: %s: %q is not a key of %d column(s)", t, s, len(m.key)))
	}
	k := make(duplex.Key, len(m.key))
	for i, ci := range m.key {
		c := &m.cols[ci]
		v, err := c.decode([]byte(texts[i]))
		if err != nil {
			return nil, duplex.Permanent(fmt.Errorf("applypg: %s key column %s: decode %q: %w", t, c.name, texts[i], err))
		}
		k[i] = duplex.Column{Name: c.name, Value: v}
	}
	return k, nil
}

// EstimateRows implements duplex.Scanner: pg_class.reltuples (0 when the
// table was never analyzed).
func (a *Applier) EstimateRows(ctx context.Context, t duplex.Table) (int64, error) {
	var n float64
	err := a.pool.QueryRow(ctx, "SELECT greatest(reltuples, 0)::float8 FROM pg_catalog.pg_class WHERE oid = $1::regclass", pgutil.QuoteTable(t)).Scan(&n)
	if err != nil {
		return 0, pgutil.Classify(fmt.Errorf("applypg: estimate the rows of %s on %s: %w", t, a.cfg.Target, err))
	}
	return int64(n), nil
}
