package applypg

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// Statements of a read. The rows are read in text form: the transaction
// pins the settings that shape it (the source pins the same ones),
// whatever the database's defaults; REPEATABLE READ gives the rows and
// their agreement records one snapshot.
const (
	readBegin         = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
	pinOutputSettings = "SELECT pg_catalog.set_config('DateStyle', 'ISO, MDY', true), pg_catalog.set_config('IntervalStyle', 'postgres', true), " +
		"pg_catalog.set_config('extra_float_digits', '3', true), pg_catalog.set_config('bytea_output', 'hex', true)"
	readCommit = "COMMIT"
)

// read fills out with the rows of keys of m, and recs (when not nil) with
// their agreement records, in one round trip: one batch of statements, all
// results in text form.
func (a *Applier) read(ctx context.Context, m *tableMeta, keys []duplex.Key, out []duplex.Values, recs []duplex.Agreement) error {
	params := make([][]string, len(m.key))
	for i := range params {
		params[i] = make([]string, len(keys))
	}
	for r, k := range keys {
		texts, err := m.keyTexts(k)
		if err != nil {
			return err
		}
		for i, s := range texts {
			params[i][r] = s
		}
	}
	values := make([][]byte, len(params))
	for i, p := range params {
		values[i] = pgutil.TextArray(p)
	}
	fail := func(err error) error {
		return pgutil.Classify(fmt.Errorf("applypg: look up %d rows of %s: %w", len(keys), m.table, err))
	}
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		return fail(err)
	}
	defer conn.Release()
	pc := conn.Conn().PgConn()
	lookup, err := prepared(ctx, conn.Conn(), m.lookupSQL)
	if err != nil {
		return fail(err)
	}
	names := []string{lookup}
	b := &pgconn.Batch{}
	b.ExecParams(readBegin, nil, nil, nil, nil)
	b.ExecParams(pinOutputSettings, nil, nil, nil, nil)
	b.ExecPrepared(lookup, values, nil, nil)
	if recs != nil {
		load, err := prepared(ctx, conn.Conn(), a.agreements.LoadSQL())
		if err != nil {
			return fail(err)
		}
		names = append(names, load)
		b.ExecPrepared(load, a.agreements.LoadParams(m.table, keys), nil, a.agreements.LoadFormats())
	}
	b.ExecParams(readCommit, nil, nil, nil, nil)
	mrr := pc.ExecBatch(ctx, b)
	err = a.readResults(mrr, m, keys, out, recs)
	if cerr := mrr.Close(); err == nil && cerr != nil {
		err = fail(cerr)
	}
	if err != nil && !pc.IsClosed() {
		// Failed inside the transaction: end it, and forget the prepared
		// statements (a table changed under them: the next read prepares
		// them again), or let the pool drop the connection.
		if _, rerr := pc.Exec(ctx, "ROLLBACK").ReadAll(); rerr != nil {
			_ = pc.Close(ctx)
		}
		for _, name := range names {
			if derr := conn.Conn().Deallocate(ctx, name); derr != nil {
				_ = pc.Close(ctx)
			}
		}
	}
	return err
}

// prepared returns the name of sql prepared on conn, preparing it the
// first time (pgx keeps the connection's prepared statements): a read
// then parses and plans nothing but its transaction's statements.
func prepared(ctx context.Context, conn *pgx.Conn, sql string) (string, error) {
	name, ok := readNames.Load(sql)
	if !ok {
		sum := sha256.Sum256([]byte(sql))
		name, _ = readNames.LoadOrStore(sql, "duplex_read_"+hex.EncodeToString(sum[:12]))
	}
	if _, err := conn.Prepare(ctx, name.(string), sql); err != nil {
		return "", err
	}
	return name.(string), nil
}

// readNames maps the SQL of a read's prepared statement to its name (a
// hash of the SQL, computed once).
var readNames sync.Map

// readResults reads the results of read's batch in order.
func (a *Applier) readResults(mrr *pgconn.MultiResultReader, m *tableMeta, keys []duplex.Key, out []duplex.Values, recs []duplex.Agreement) error {
	fail := func(err error) error {
		return pgutil.Classify(fmt.Errorf("applypg: look up %d rows of %s: %w", len(keys), m.table, err))
	}
	next := func() (*pgconn.ResultReader, error) {
		if !mrr.NextResult() {
			err := mrr.Close()
			if err == nil {
				err = fmt.Errorf("missing result")
			}
			return nil, fail(err)
		}
		return mrr.ResultReader(), nil
	}
	skip := func() error {
		rr, err := next()
		if err != nil {
			return err
		}
		if _, err := rr.Close(); err != nil {
			return fail(err)
		}
		return nil
	}
	for range 2 { // BEGIN, the output settings
		if err := skip(); err != nil {
			return err
		}
	}
	rr, err := next()
	if err != nil {
		return err
	}
	if err := a.readRows(rr, m, keys, out); err != nil {
		_, _ = rr.Close()
		return err
	}
	if _, err := rr.Close(); err != nil {
		return fail(err)
	}
	if recs != nil {
		if rr, err = next(); err != nil {
			return err
		}
		err := a.agreements.ReadLoad(rr, m.table, keys, recs)
		if _, cerr := rr.Close(); err == nil && cerr != nil {
			err = fail(cerr)
		}
		if err != nil {
			return fmt.Errorf("applypg: %s: %w", a.cfg.Target, err)
		}
	}
	return skip() // COMMIT
}

// readRows decodes the lookup's rows into out.
func (a *Applier) readRows(rr *pgconn.ResultReader, m *tableMeta, keys []duplex.Key, out []duplex.Values) error {
	for rr.NextRow() {
		raw := rr.Values()
		ord, err := strconv.Atoi(string(raw[0]))
		if err != nil || ord < 1 || ord > len(keys) {
			return fmt.Errorf("applypg: look up %s: bad ordinal %q", m.table, raw[0])
		}
		row := make(duplex.Values, len(m.cols)+1)
		for i := range m.cols {
			c := &m.cols[i]
			b := raw[1+i]
			if b == nil {
				row[c.name] = nil
				continue
			}
			v, err := c.decode(b)
			if err != nil {
				return &decodeError{duplex.Permanent(fmt.Errorf("applypg: look up %s: decode column %s: %w", m.table, c.name, err))}
			}
			row[c.name] = v
		}
		if a.commitTime {
			if b := raw[1+len(m.cols)]; b != nil {
				if v, err := commitTimeDecoder(b); err == nil {
					row[duplex.CommitTimeField] = v
				}
			}
		}
		out[ord-1] = row
	}
	return nil
}
