package applypg

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

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
	oids := make([]uint32, len(params))
	for i, p := range params {
		values[i], oids[i] = pgutil.TextArray(p), pgtype.TextArrayOID
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
	b := &pgconn.Batch{}
	b.ExecParams(readBegin, nil, nil, nil, nil)
	b.ExecParams(pinOutputSettings, nil, nil, nil, nil)
	b.ExecParams(m.lookupSQL, values, oids, nil, nil)
	if recs != nil {
		a.agreements.QueueLoad(b, m.table, keys)
	}
	b.ExecParams(readCommit, nil, nil, nil, nil)
	mrr := pc.ExecBatch(ctx, b)
	err = a.readResults(mrr, m, keys, out, recs)
	if cerr := mrr.Close(); err == nil && cerr != nil {
		err = fail(cerr)
	}
	if err != nil && pc.TxStatus() != 'I' && !pc.IsClosed() {
		// Failed inside the transaction: end it, or let the pool drop the
		// connection.
		if _, rerr := pc.Exec(ctx, "ROLLBACK").ReadAll(); rerr != nil {
			_ = pc.Close(ctx)
		}
	}
	return err
}

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
