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
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/agree/agreepg"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// Method is how Apply sends the writes of a batch. Every method writes a
// batch in one transaction, under the replication origin, with the ledger
// and the checkpoint, and checks every expectation; they differ in speed
// only. See MethodUnnest for the measurements behind the default.
type Method uint8

// The write methods.
const (
	// MethodUnnest (the default) sends each run of consecutive writes of
	// one shape (same table, operation and fields, no key twice) as one
	// statement over unnest() of text arrays, one array per field:
	// INSERT ... SELECT ... ON CONFLICT DO NOTHING, UPDATE ... FROM and
	// DELETE ... USING, with the expectations folded into the WHERE clause
	// and a data-modifying CTE returning the ordinals of the rows whose
	// expectation failed. All statements of a batch are pipelined: a batch
	// costs two round trips whatever its size, the statements are prepared
	// once per connection, and the server parses, plans and executes one
	// statement per run instead of one per row. The default (see the
	// package doc).
	MethodUnnest Method = iota + 1
	// MethodRows sends one statement per write, all pipelined in one round
	// trip (a pgx.Batch).
	MethodRows
	// MethodValues sends each run as one statement over a multi-row VALUES
	// list (one parameter per field and row, at most 65,535 per statement).
	// Its SQL text depends on the number of rows, so it is parsed and
	// planned far more often.
	MethodValues
	// MethodCopy copies each run into a temporary table with COPY, then
	// writes from there. COPY cannot be pipelined with the statements, so
	// it costs extra round trips per run.
	MethodCopy
)

// String returns the method's name.
func (m Method) String() string {
	switch m {
	case MethodUnnest:
		return "unnest"
	case MethodRows:
		return "rows"
	case MethodValues:
		return "values"
	case MethodCopy:
		return "copy"
	}
	return "method(" + strconv.Itoa(int(m)) + ")"
}

// maxParams is the most parameters one statement may have.
const maxParams = 65535

// shape is what the writes of one run share: the statement that applies
// them.
type shape struct {
	m   *tableMeta
	op  duplex.Op
	set []int // columns written, in table order
	exp []int // columns compared (Write.Expect), in table order
	// params lists the column of each statement parameter: the key
	// (update, delete), then set, then exp. An insert has only set, which
	// includes the key.
	params []int
	keyPar []int // parameter of each key column
	id     string
}

// run is consecutive writes of one shape, with no key twice, applied by
// one statement.
type run struct {
	sh    *shape
	idx   []int           // batch index of each write (writes the table cannot take are left out)
	n     int             // number of writes
	vals  [][]pgtype.Text // parameter values: vals[param][row]
	keys  map[string]struct{}
	stage int // MethodCopy: run number in the staging table
}

// plan is a batch made ready to send.
type plan struct {
	runs   []*run
	ids    []string // change IDs for the ledger
	tables []duplex.Table
	// upsert: insert the IDs with ON CONFLICT DO NOTHING, and first
	// agreement records with the upsert of the others. Off at first: a
	// plain insert costs about half as much (no speculative insertion), and
	// the IDs and first records are new but for a batch repeated after its
	// commit; when one exists already the insert fails (errLedgerDup) and
	// the batch is sent again with upsert on.
	upsert bool
}

// Apply implements duplex.Applier. The batch is one transaction on one
// connection, under the Applier's replication origin: the writes in order,
// the change IDs into the ledger, the checkpoint, COMMIT.
//
// An insert of an existing key, an update of a missing row and a write
// whose expectation (Write.Expect) no longer holds fail the batch with a
// *duplex.BatchError wrapping duplex.ErrStale; a delete of a missing row is
// fine. Expected values are compared in the column's text form, after a
// cast to the column's type, so NULL equals NULL. A write that fails names
// its index in a *duplex.BatchError (a failing bulk statement is replayed
// write by write to find it). Fields the table lacks are dropped with a
// warning (once per table and field). A write colliding with another row
// on a unique constraint other than the primary key fails with a
// *duplex.UniqueError (in the *duplex.BatchError) naming the constraint,
// the values and the row holding them. Errors are classified
// (internal/pgutil.Classify).
func (a *Applier) Apply(ctx context.Context, b *duplex.Batch) error {
	if len(b.Writes) == 0 && b.Checkpoint == "" && len(b.Agreements) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("applypg: %s: %w", a.cfg.Target, err)
	}
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var p *plan
		if p, err = a.plan(ctx, b); err != nil {
			return err
		}
		err = a.applyPlan(ctx, b, p, a.cfg.Method)
		if err == nil || attempt > 0 || !isSchemaChange(err) {
			break
		}
		a.log.InfoContext(ctx, "table changed; reading its columns again", slog.Any("err", err))
		a.forget(p.tables...)
	}
	if err != nil {
		err = a.uniqueError(ctx, b, err)
	}
	return err
}

// applyPlan applies p with method under the Applier's origin.
func (a *Applier) applyPlan(ctx context.Context, b *duplex.Batch, p *plan, method Method) error {
	return a.withOrigin(ctx, func(s *session) (bool, error) {
		err := a.fast(ctx, s, b, p, method)
		if a.retryUpsert(ctx, s, p, err) {
			err = a.fast(ctx, s, b, p, method)
		}
		if errors.Is(err, errOriginBusy) {
			return true, err
		}
		if err == nil || !needsReplay(err) {
			return false, err
		}
		// A bulk statement failed: replay write by write to name the
		// failing write (or succeed, when only the bulk order failed, as a
		// unique key swapped between rows).
		a.log.DebugContext(ctx, "batch failed; replaying it write by write", slog.Any("err", err))
		if !a.cleanupTx(ctx, s) {
			return false, err
		}
		err = a.sequential(ctx, s, b, p)
		if a.retryUpsert(ctx, s, p, err) {
			return false, a.sequential(ctx, s, b, p)
		}
		return false, err
	})
}

// errLedgerDup marks the failure of a plain insert on a row that exists: a
// change ID in the ledger, or an agreement record.
var errLedgerDup = errors.New("applypg: change ID or agreement record exists already")

// retryUpsert reports whether err is a plain insert's failure on a row that
// exists (errLedgerDup); then it rolls back and turns p's upsert on for the
// batch to be sent again.
func (a *Applier) retryUpsert(ctx context.Context, s *session, p *plan, err error) bool {
	if p.upsert || !errors.Is(err, errLedgerDup) || !a.cleanupTx(ctx, s) {
		return false
	}
	a.log.DebugContext(ctx, "a change ID of the batch is in the ledger already; sending the batch again", slog.Any("err", err))
	p.upsert = true
	return true
}

var errOriginBusy = errors.New("applypg: replication origin in use by another session")

// replayError marks a statement error whose write is unknown.
type replayError struct{ err error }

func (e *replayError) Error() string { return e.err.Error() }
func (e *replayError) Unwrap() error { return e.err }

func needsReplay(err error) bool {
	var r *replayError
	return errors.As(err, &r)
}

// plan resolves the batch's tables, drops unknown fields, renders every
// value and groups the writes into runs.
func (a *Applier) plan(ctx context.Context, b *duplex.Batch) (*plan, error) {
	p := &plan{ids: make([]string, 0, len(b.Writes))}
	metas := make(map[duplex.Table]*tableMeta)
	shapes := make(map[string]*shape)
	seenID := make(map[string]struct{}, len(b.Writes))
	var cur *run
	var setBuf, expBuf []int
	for i := range b.Writes {
		w := &b.Writes[i]
		if c := w.Change; c != nil && c.ID != "" {
			if _, dup := seenID[c.ID]; !dup {
				seenID[c.ID] = struct{}{}
				p.ids = append(p.ids, c.ID)
			}
		}
		m := metas[w.Table]
		if m == nil {
			var err error
			if m, err = a.meta(ctx, w.Table); err != nil {
				return nil, indexed(i, err)
			}
			p.tables = append(p.tables, w.Table)
		}
		var err error
		if m, err = a.known(ctx, m, w.Set); err == nil {
			m, err = a.known(ctx, m, w.Expect)
		}
		if err != nil {
			return nil, indexed(i, err)
		}
		metas[w.Table] = m

		keyTexts, err := m.keyTexts(w.Key)
		if err != nil {
			return nil, &duplex.BatchError{Index: i, Err: err}
		}
		setBuf, expBuf = setBuf[:0], expBuf[:0]
		switch w.Op {
		case duplex.OpInsert:
			for f := range w.Set {
				if ci, ok := m.index[f]; ok && !m.cols[ci].generated {
					setBuf = append(setBuf, ci)
				}
			}
			for _, ci := range m.key {
				if _, ok := w.Set[m.cols[ci].name]; !ok {
					setBuf = append(setBuf, ci)
				}
			}
		case duplex.OpUpdate:
			for f := range w.Set {
				if ci, ok := m.index[f]; ok && !m.cols[ci].generated {
					setBuf = append(setBuf, ci)
				}
			}
			if len(setBuf) == 0 {
				continue // nothing the table can take
			}
			fallthrough
		case duplex.OpDelete:
			for f := range w.Expect {
				if ci, ok := m.index[f]; ok {
					expBuf = append(expBuf, ci)
				}
			}
		default:
			return nil, &duplex.BatchError{Index: i, Err: duplex.Permanent(fmt.Errorf("applypg: %s %s: cannot apply op %s", w.Table, w.Key, w.Op))}
		}
		slices.Sort(setBuf)
		slices.Sort(expBuf)
		sh := a.shapeOf(shapes, m, w.Op, setBuf, expBuf)

		rowKey := strings.Join(keyTexts, "\x00")
		newKey := ""
		if w.Op != duplex.OpDelete {
			// A write may change the key (an update of a key column): the
			// row's new key counts as touched too.
			if nk, changed := newKeyOf(m, w, keyTexts); changed {
				newKey = nk
			}
		}
		if cur == nil || cur.sh != sh || hasKey(cur, rowKey) || (newKey != "" && hasKey(cur, newKey)) {
			cur = &run{sh: sh, vals: make([][]pgtype.Text, len(sh.params)), keys: make(map[string]struct{})}
			p.runs = append(p.runs, cur)
		}
		cur.keys[rowKey] = struct{}{}
		if newKey != "" {
			cur.keys[newKey] = struct{}{}
		}
		for pi, ci := range sh.params {
			c := &m.cols[ci]
			var v any
			var ok bool
			switch {
			case pi < len(sh.params)-len(sh.set)-len(sh.exp): // key of an update or delete
				v, ok = keyValue(w.Key, c.name)
			case pi < len(sh.params)-len(sh.exp): // set
				if v, ok = w.Set[c.name]; !ok && w.Op == duplex.OpInsert {
					v, ok = keyValue(w.Key, c.name)
				}
			default: // exp
				v, ok = w.Expect[c.name]
			}
			if !ok {
				return nil, &duplex.BatchError{Index: i, Err: duplex.Permanent(fmt.Errorf("applypg: %s %s: no value for column %s", w.Table, w.Key, c.name))}
			}
			s, null, err := textOf(v, c.base)
			if err != nil {
				return nil, &duplex.BatchError{Index: i, Err: duplex.Permanent(fmt.Errorf("applypg: %s %s column %s: %w", w.Table, w.Key, c.name, err))}
			}
			cur.vals[pi] = append(cur.vals[pi], pgtype.Text{String: s, Valid: !null})
		}
		cur.idx = append(cur.idx, i)
		cur.n++
	}
	for _, r := range p.runs {
		r.keys = nil
	}
	return p, nil
}

// indexed names write i as the cause of a permanent err; other errors are
// the endpoint's, not the write's.
func indexed(i int, err error) error {
	if duplex.IsPermanent(err) {
		return &duplex.BatchError{Index: i, Err: err}
	}
	return err
}

func hasKey(r *run, k string) bool {
	_, ok := r.keys[k]
	return ok
}

func keyValue(k duplex.Key, name string) (any, bool) {
	for _, c := range k {
		if c.Name == name {
			return c.Value, true
		}
	}
	return nil, false
}

// newKeyOf returns the key a write leaves the row with, when its Set
// changes a key column.
func newKeyOf(m *tableMeta, w *duplex.Write, old []string) (string, bool) {
	var texts []string
	for i, ci := range m.key {
		v, ok := w.Set[m.cols[ci].name]
		if !ok {
			continue
		}
		s, null, err := textOf(v, m.cols[ci].base)
		if err != nil || null || s == old[i] {
			continue
		}
		if texts == nil {
			texts = slices.Clone(old)
		}
		texts[i] = s
	}
	if texts == nil {
		return "", false
	}
	return strings.Join(texts, "\x00"), true
}

// shapeOf returns the shape for m, op and the column lists, shared by all
// writes of the batch that have it.
func (a *Applier) shapeOf(shapes map[string]*shape, m *tableMeta, op duplex.Op, set, exp []int) *shape {
	var b strings.Builder
	b.WriteString(m.table.String())
	b.WriteByte(0)
	b.WriteString(strconv.Itoa(int(op)))
	for _, c := range set {
		b.WriteString(",")
		b.WriteString(strconv.Itoa(c))
	}
	b.WriteString("|")
	for _, c := range exp {
		b.WriteString(",")
		b.WriteString(strconv.Itoa(c))
	}
	id := b.String()
	if sh := shapes[id]; sh != nil && sh.m == m {
		return sh
	}
	sh := &shape{m: m, op: op, set: slices.Clone(set), exp: slices.Clone(exp), id: id}
	if op != duplex.OpInsert {
		sh.params = append(sh.params, m.key...)
		for i := range m.key {
			sh.keyPar = append(sh.keyPar, i)
		}
	}
	sh.params = append(sh.params, set...)
	if op == duplex.OpInsert {
		sh.keyPar = make([]int, len(m.key))
		for i, kc := range m.key {
			sh.keyPar[i] = slices.Index(sh.params, kc)
		}
	}
	sh.params = append(sh.params, exp...)
	shapes[id] = sh
	return sh
}

// ---- SQL ----

func par(i int) string { return "$" + strconv.Itoa(i) }

// bulkSQL returns the statement applying a run whose rows come from src, a
// query with columns p1..pn (text) and ord (the row's 1-based position).
// It returns the ord of every row whose write was stale.
func (sh *shape) bulkSQL(src string) string {
	m := sh.m
	var b strings.Builder
	b.WriteString("WITH v AS (")
	b.WriteString(src)
	b.WriteString("), w AS (")
	v := func(pi int) string { return "v.p" + strconv.Itoa(pi+1) }
	switch sh.op {
	case duplex.OpInsert:
		b.WriteString("INSERT INTO " + m.ident + " AS t (")
		sh.insertColumns(&b, v, ") OVERRIDING SYSTEM VALUE SELECT ")
		b.WriteString(" FROM v ORDER BY v.ord ON CONFLICT (")
		writeList(&b, m.key, func(_, ci int) string { return m.cols[ci].ident })
		b.WriteString(") DO NOTHING RETURNING ")
		writeList(&b, m.key, func(i, ci int) string { return "t." + m.cols[ci].ident + " AS k" + strconv.Itoa(i+1) })
		b.WriteString(") SELECT v.ord FROM v WHERE NOT EXISTS (SELECT FROM w WHERE ")
		for i, ci := range m.key {
			if i > 0 {
				b.WriteString(" AND ")
			}
			b.WriteString("w.k" + strconv.Itoa(i+1) + " = " + v(sh.keyPar[i]) + "::" + m.cols[ci].cast)
		}
		b.WriteString(")")
	case duplex.OpUpdate:
		b.WriteString("UPDATE " + m.ident + " AS t SET ")
		sh.setList(&b, v)
		b.WriteString(" FROM v WHERE ")
		sh.keyMatch(&b, v)
		sh.expMatch(&b, v)
		b.WriteString(" RETURNING v.ord) SELECT v.ord FROM v WHERE NOT EXISTS (SELECT FROM w WHERE w.ord = v.ord)")
	case duplex.OpDelete:
		b.WriteString("DELETE FROM " + m.ident + " AS t USING v WHERE ")
		sh.keyMatch(&b, v)
		sh.expMatch(&b, v)
		b.WriteString(" RETURNING v.ord) SELECT v.ord FROM v WHERE NOT EXISTS (SELECT FROM w WHERE w.ord = v.ord) AND EXISTS (SELECT FROM " + m.ident + " AS t WHERE ")
		sh.keyMatch(&b, v)
		b.WriteString(")")
	}
	return b.String()
}

func (sh *shape) cached(kind string, build func() string) string {
	k := sh.id + "\x00" + kind
	if s, ok := sh.m.stmts.Load(k); ok {
		return s.(string)
	}
	s := build()
	sh.m.stmts.Store(k, s)
	return s
}

// unnestSQL applies a run from text arrays $1..$n.
func (sh *shape) unnestSQL() string {
	return sh.cached("unnest", func() string {
		var b strings.Builder
		b.WriteString("SELECT * FROM unnest(")
		for i := range sh.params {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(par(i+1) + "::text[]")
		}
		b.WriteString(") WITH ORDINALITY AS u(")
		for i := range sh.params {
			b.WriteString("p" + strconv.Itoa(i+1) + ", ")
		}
		b.WriteString("ord)")
		return sh.bulkSQL(b.String())
	})
}

// valuesSQL applies rows rows from a VALUES list.
func (sh *shape) valuesSQL(rows int) string {
	return sh.cached("values"+strconv.Itoa(rows), func() string {
		var b strings.Builder
		b.WriteString("SELECT * FROM (VALUES ")
		n := 1
		for r := range rows {
			if r > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(")
			for range sh.params {
				b.WriteString(par(n) + "::text, ")
				n++
			}
			b.WriteString(strconv.Itoa(r+1) + "::int8)")
		}
		b.WriteString(") AS u(")
		for i := range sh.params {
			b.WriteString("p" + strconv.Itoa(i+1) + ", ")
		}
		b.WriteString("ord)")
		return sh.bulkSQL(b.String())
	})
}

// stageTable names the temporary staging table for runs of width params.
func stageTable(width int) string { return "duplex_stage_" + strconv.Itoa(width) }

// copySQL applies the rows of run $1 of the staging table.
func (sh *shape) copySQL() string {
	return sh.cached("copy", func() string {
		var b strings.Builder
		b.WriteString("SELECT ")
		for i := range sh.params {
			b.WriteString("p" + strconv.Itoa(i+1) + ", ")
		}
		b.WriteString("ord FROM pg_temp." + stageTable(len(sh.params)) + " WHERE run = $1")
		return sh.bulkSQL(b.String())
	})
}

// rowSQL applies one write with parameters $1..$n (text). Inserts and
// updates report the rows they wrote (0: stale); deletes return whether
// they are fine (the row was deleted or is absent).
func (sh *shape) rowSQL() string {
	return sh.cached("row", func() string {
		m := sh.m
		var b strings.Builder
		p := func(pi int) string { return par(pi+1) + "::text" }
		switch sh.op {
		case duplex.OpInsert:
			b.WriteString("INSERT INTO " + m.ident + " AS t (")
			sh.insertColumns(&b, p, ") OVERRIDING SYSTEM VALUE VALUES (")
			b.WriteString(") ON CONFLICT (")
			writeList(&b, m.key, func(_, ci int) string { return m.cols[ci].ident })
			b.WriteString(") DO NOTHING")
		case duplex.OpUpdate:
			b.WriteString("UPDATE " + m.ident + " AS t SET ")
			sh.setList(&b, p)
			b.WriteString(" WHERE ")
			sh.keyMatch(&b, p)
			sh.expMatch(&b, p)
		case duplex.OpDelete:
			b.WriteString("WITH w AS (DELETE FROM " + m.ident + " AS t WHERE ")
			sh.keyMatch(&b, p)
			sh.expMatch(&b, p)
			b.WriteString(" RETURNING 1) SELECT EXISTS (SELECT FROM w) OR NOT EXISTS (SELECT FROM " + m.ident + " AS t WHERE ")
			sh.keyMatch(&b, p)
			b.WriteString(")")
		}
		return b.String()
	})
}

// rowArgs returns the parameters of row r of a run.
func (r *run) rowArgs(row int) []any {
	args := make([]any, len(r.vals))
	for i, col := range r.vals {
		if t := col[row]; t.Valid {
			args[i] = t.String
		}
	}
	return args
}

// ---- execution ----

// result kinds of queued statements.
type resultKind uint8

const (
	resExec    resultKind = iota // BEGIN: no result
	resStale                     // rows of ords of stale writes
	resCount                     // rows affected, 0 is stale
	resDelete                    // one bool, false is stale
	resStateOK                   // ledger or checkpoint
	resLedger                    // plain ledger insert: a unique violation is errLedgerDup
	resRecords                   // plain insert of first agreement records: a unique violation is errLedgerDup
	resSetup                     // the origin's session setup: the backend's start time
)

type queued struct {
	kind resultKind
	run  *run
	row  int // resCount, resDelete: the row; resStale: the run's first row of this statement
}

// batchReader reads the results of a pgx.Batch in queue order.
type batchReader struct {
	q     []queued
	stale int // smallest stale write index, -1: none
}

func (a *Applier) queueState(b *pgx.Batch, q *[]queued, batch *duplex.Batch, p *plan) error {
	if len(p.ids) > 0 {
		sql := "INSERT INTO " + a.state.Applied + " (sync, target, change_id) SELECT $1, $2, unnest($3::text[])"
		kind := resLedger
		if p.upsert {
			sql += " ON CONFLICT DO NOTHING"
			kind = resStateOK
		}
		b.Queue(sql, a.cfg.Sync, a.cfg.Target, p.ids)
		*q = append(*q, queued{kind: kind})
	}
	if batch.Checkpoint != "" {
		b.Queue("INSERT INTO "+a.state.Checkpoints+" (sync, target, source, position) VALUES ($1, $2, $3, $4)"+
			" ON CONFLICT (sync, target, source) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
			a.cfg.Sync, a.cfg.Target, batch.Source, string(batch.Checkpoint))
		*q = append(*q, queued{kind: resStateOK})
	}
	plain, err := a.agreements.QueueSave(b, batch.Agreements, p.upsert)
	if err != nil {
		return fmt.Errorf("applypg: %s: %w", a.cfg.Target, err)
	}
	for _, pl := range plain {
		kind := resStateOK
		if pl {
			kind = resRecords
		}
		*q = append(*q, queued{kind: kind})
	}
	return nil
}

// customPlans makes the transaction plan each statement for its own
// parameters and the table's current size. The apply statements are
// prepared once and would otherwise settle on a generic plan made while a
// table was empty or small (a hash join over a scan of the table), kept as
// the table grows to millions of rows.
const customPlans = "SET LOCAL plan_cache_mode = force_custom_plan"

// queueBegin queues the origin's session setup, unless done, and BEGIN.
func (s *session) queueBegin(b *pgx.Batch, q *[]queued) {
	if !s.originSet {
		b.Queue(s.setupSQL, s.origin)
		*q = append(*q, queued{kind: resSetup})
	}
	b.Queue("BEGIN")
	b.Queue(customPlans)
	*q = append(*q, queued{kind: resExec}, queued{kind: resExec})
	s.inTx = true
}

// fast applies p with method in one transaction.
func (a *Applier) fast(ctx context.Context, s *session, batch *duplex.Batch, p *plan, method Method) error {
	conn := s.conn.Conn()
	b := &pgx.Batch{}
	var q []queued
	s.queueBegin(b, &q)
	if method == MethodCopy {
		widths := map[int]bool{}
		for i, r := range p.runs {
			r.stage = i + 1
			if w := len(r.sh.params); !widths[w] {
				widths[w] = true
				var cols strings.Builder
				for j := range w {
					cols.WriteString(", p" + strconv.Itoa(j+1) + " text")
				}
				b.Queue("CREATE TEMP TABLE IF NOT EXISTS " + stageTable(w) + " (run int4, ord int8" + cols.String() + ") ON COMMIT DELETE ROWS")
				q = append(q, queued{kind: resExec})
			}
		}
		if err := a.readBatch(ctx, s, conn.SendBatch(ctx, b), q, nil); err != nil {
			return err
		}
		for _, r := range p.runs {
			cols := make([]string, 0, 2+len(r.sh.params))
			cols = append(cols, "run", "ord")
			for j := range r.sh.params {
				cols = append(cols, "p"+strconv.Itoa(j+1))
			}
			_, err := conn.CopyFrom(ctx, pgx.Identifier{"pg_temp", stageTable(len(r.sh.params))}, cols,
				pgx.CopyFromSlice(r.n, func(i int) ([]any, error) {
					row := make([]any, 0, len(cols))
					row = append(row, int32(r.stage), int64(i+1))
					for _, v := range r.vals {
						row = append(row, v[i])
					}
					return row, nil
				}))
			if err != nil {
				return a.writeError(err, -1)
			}
		}
		b, q = &pgx.Batch{}, q[:0]
	}
	for _, r := range p.runs {
		switch method {
		case MethodUnnest:
			args := make([]any, len(r.vals))
			for i, v := range r.vals {
				args[i] = v
			}
			b.Queue(r.sh.unnestSQL(), args...)
			q = append(q, queued{kind: resStale, run: r})
		case MethodCopy:
			b.Queue(r.sh.copySQL(), r.stage)
			q = append(q, queued{kind: resStale, run: r})
		case MethodValues:
			per := max(1, maxParams/len(r.sh.params))
			for lo := 0; lo < r.n; lo += per {
				hi := min(r.n, lo+per)
				args := make([]any, 0, (hi-lo)*len(r.vals))
				for row := lo; row < hi; row++ {
					args = append(args, r.rowArgs(row)...)
				}
				b.Queue(r.sh.valuesSQL(hi-lo), args...)
				q = append(q, queued{kind: resStale, run: r, row: lo})
			}
		case MethodRows:
			kind := resCount
			if r.sh.op == duplex.OpDelete {
				kind = resDelete
			}
			for row := range r.n {
				b.Queue(r.sh.rowSQL(), r.rowArgs(row)...)
				q = append(q, queued{kind: kind, run: r, row: row})
			}
		}
	}
	if err := a.queueState(b, &q, batch, p); err != nil {
		return err
	}
	stale := -1
	if err := a.readBatch(ctx, s, conn.SendBatch(ctx, b), q, &stale); err != nil {
		return err
	}
	if stale >= 0 {
		return a.staleError(batch, stale)
	}
	return a.commit(ctx, s)
}

// readBatch reads the results of a sent batch. It records the smallest
// stale write index in *stale. A failing write statement is returned as a
// *replayError when its error is permanent (the write is not known: a bulk
// statement, or a statement that failed to prepare, which pgx reports on
// the first result).
func (a *Applier) readBatch(ctx context.Context, s *session, br pgx.BatchResults, q []queued, stale *int) (err error) {
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = a.writeError(cerr, -1)
		}
	}()
	for _, it := range q {
		switch it.kind {
		case resSetup:
			if err := a.setupResult(br.QueryRow().Scan(&s.started), s.origin); err != nil {
				return err
			}
			s.originSet = true
		case resExec:
			if _, err := br.Exec(); err != nil {
				return a.writeError(err, -1)
			}
		case resStateOK, resLedger, resRecords:
			if _, err := br.Exec(); err != nil {
				if it.kind == resLedger && pgutil.SQLState(err) == "23505" /* unique_violation */ ||
					it.kind == resRecords && agreepg.IsRecordExists(err) {
					return fmt.Errorf("%w: %w", errLedgerDup, stateError(a.cfg.Target, err))
				}
				return stateError(a.cfg.Target, err)
			}
		case resStale:
			rows, err := br.Query()
			if err != nil {
				return a.writeError(err, -1)
			}
			for rows.Next() {
				var ord int64
				if err := rows.Scan(&ord); err != nil {
					rows.Close()
					return a.writeError(err, -1)
				}
				if ord < 1 || it.row+int(ord) > it.run.n {
					rows.Close()
					return fmt.Errorf("applypg: %s: bad ordinal %d", a.cfg.Target, ord)
				}
				idx := it.run.idx[it.row+int(ord)-1]
				if *stale < 0 || idx < *stale {
					*stale = idx
				}
			}
			if err := rows.Err(); err != nil {
				return a.writeError(err, -1)
			}
		case resCount:
			tag, err := br.Exec()
			if err != nil {
				return a.writeError(err, -1)
			}
			if tag.RowsAffected() == 0 {
				if idx := it.run.idx[it.row]; *stale < 0 || idx < *stale {
					*stale = idx
				}
			}
		case resDelete:
			var ok bool
			if err := br.QueryRow().Scan(&ok); err != nil {
				return a.writeError(err, -1)
			}
			if !ok {
				if idx := it.run.idx[it.row]; *stale < 0 || idx < *stale {
					*stale = idx
				}
			}
		}
	}
	return nil
}

// writeError classifies the error of a write statement. With index < 0
// (the write is unknown) a permanent statement error is marked for a
// write-by-write replay.
func (a *Applier) writeError(err error, index int) error {
	cerr := pgutil.Classify(fmt.Errorf("applypg: %s: %w", a.cfg.Target, err))
	if pgutil.SQLState(err) == "" || duplex.ClassOf(cerr) == duplex.ClassUnavailable {
		return cerr
	}
	if index >= 0 {
		return &duplex.BatchError{Index: index, Err: cerr}
	}
	if isSchemaChange(err) || !duplex.IsPermanent(cerr) {
		return cerr
	}
	return &replayError{cerr}
}

// stateError classifies a failure to write the ledger or the checkpoint:
// never the changes' fault, so never permanent.
func stateError(target string, err error) error {
	cerr := pgutil.Classify(fmt.Errorf("applypg: %s: record the ledger and checkpoint: %w", target, err))
	if duplex.IsPermanent(cerr) {
		return duplex.Unavailable(cerr)
	}
	return cerr
}

func (a *Applier) staleError(b *duplex.Batch, i int) error {
	w := &b.Writes[i]
	what := "expected values changed"
	switch w.Op {
	case duplex.OpInsert:
		what = "the row exists"
	case duplex.OpUpdate:
		what = "the row is gone or its expected values changed"
	}
	return &duplex.BatchError{Index: i, Err: fmt.Errorf("applypg: %s %s %s: %s: %w", w.Op, w.Table, w.Key, what, duplex.ErrStale)}
}

// commit commits the open transaction and resets the origin, in one round
// trip.
func (a *Applier) commit(ctx context.Context, s *session) error {
	b := &pgx.Batch{}
	b.Queue("COMMIT")
	b.Queue(a.resetSQL())
	br := s.conn.Conn().SendBatch(ctx, b)
	_, err := br.Exec()
	if err != nil {
		_ = br.Close()
		// The outcome is unknown when the connection broke: the Pipeline
		// asks the ledger.
		return pgutil.Classify(fmt.Errorf("applypg: %s: commit: %w", a.cfg.Target, err))
	}
	s.inTx = false
	if _, err := br.Exec(); err == nil {
		s.originSet = false
	}
	_ = br.Close()
	return nil
}

// cleanupTx rolls back the open transaction (the origin stays set up).
func (a *Applier) cleanupTx(ctx context.Context, s *session) bool {
	if s.conn.Conn().IsClosed() {
		return false
	}
	if !s.inTx {
		return true
	}
	if _, err := s.conn.Conn().Exec(ctx, "ROLLBACK"); err != nil {
		return false
	}
	s.inTx = false
	return true
}

// sequential applies p write by write, one statement per round trip,
// naming the failing write exactly.
func (a *Applier) sequential(ctx context.Context, s *session, batch *duplex.Batch, p *plan) error {
	conn := s.conn.Conn()
	if err := a.setup(ctx, s); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		return a.writeError(err, -1)
	}
	s.inTx = true
	if _, err := conn.Exec(ctx, customPlans); err != nil {
		return a.writeError(err, -1)
	}
	for _, r := range p.runs {
		sql := r.sh.rowSQL()
		for row := range r.n {
			idx := r.idx[row]
			args := r.rowArgs(row)
			if r.sh.op == duplex.OpDelete {
				var ok bool
				if err := conn.QueryRow(ctx, sql, args...).Scan(&ok); err != nil {
					return a.writeError(err, idx)
				}
				if !ok {
					return a.staleError(batch, idx)
				}
				continue
			}
			tag, err := conn.Exec(ctx, sql, args...)
			if err != nil {
				return a.writeError(err, idx)
			}
			if tag.RowsAffected() == 0 {
				return a.staleError(batch, idx)
			}
		}
	}
	b := &pgx.Batch{}
	var q []queued
	if err := a.queueState(b, &q, batch, p); err != nil {
		return err
	}
	if len(q) > 0 {
		if err := a.readBatch(ctx, s, conn.SendBatch(ctx, b), q, nil); err != nil {
			return err
		}
	}
	return a.commit(ctx, s)
}

// keyMatch writes the WHERE condition matching the target row's key to the
// parameters ref names.
func (sh *shape) keyMatch(b *strings.Builder, ref func(int) string) {
	m := sh.m
	for i, ci := range m.key {
		if i > 0 {
			b.WriteString(" AND ")
		}
		c := &m.cols[ci]
		b.WriteString("t." + c.ident + " = " + ref(sh.keyPar[i]) + "::" + c.cast)
	}
}

// expMatch writes the conditions checking the expected values (the last
// parameters), compared as text so json and NaN compare by value.
func (sh *shape) expMatch(b *strings.Builder, ref func(int) string) {
	m := sh.m
	off := len(sh.params) - len(sh.exp)
	for j, ci := range sh.exp {
		c := &m.cols[ci]
		b.WriteString(" AND t." + c.ident + "::text IS NOT DISTINCT FROM " + ref(off+j) + "::" + c.full + "::text")
	}
}

// insertColumns writes the inserted columns, then between, then their
// values from the parameters ref names.
func (sh *shape) insertColumns(b *strings.Builder, ref func(int) string, between string) {
	m := sh.m
	writeList(b, sh.set, func(_, ci int) string { return m.cols[ci].ident })
	b.WriteString(between)
	writeList(b, sh.set, func(j, ci int) string { return ref(j) + "::" + m.cols[ci].cast })
}

// writeList writes f(i, x) for each x of xs, separated by commas.
func writeList(b *strings.Builder, xs []int, f func(i, x int) string) {
	for i, x := range xs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(f(i, x))
	}
}

// setList writes "col = value, ..." for the updated columns, their values
// from the parameters ref names (after the key's).
func (sh *shape) setList(b *strings.Builder, ref func(int) string) {
	m := sh.m
	writeList(b, sh.set, func(j, ci int) string { return m.cols[ci].ident + " = " + ref(len(m.key)+j) + "::" + m.cols[ci].cast })
}
