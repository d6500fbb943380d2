package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
	"github.com/duplexsync/duplex/internal/pgvalue"
)

// Sides of a check: A and B, in the order the Checker was given the pools.
const (
	SideA = "a"
	SideB = "b"
)

// Defaults of Config.
const (
	// DefaultChunkSize is the number of rows of the walking side per range.
	DefaultChunkSize = 10_000
	// DefaultRecheckDelay is how long the Checker waits before checking a
	// range that differed a second time.
	DefaultRecheckDelay = time.Second
)

// TableConfig names a table to check and, optionally, its key and the
// columns to compare.
type TableConfig struct {
	// Table is the schema-qualified table, the same on both sides. Required.
	Table duplex.Table
	// Key lists the key columns in order. nil: side A's primary key.
	Key []string
	// Columns lists the synced columns to compare (key columns are always
	// compared). nil: the columns both sides have.
	Columns []string
	// Exclude lists columns never compared (a column each side maintains on
	// its own, such as a local updated_at).
	Exclude []string
}

// Config configures a Checker.
type Config struct {
	// Tables are the tables to check. Required.
	Tables []TableConfig
	// ChunkSize is how many rows of the walking side make one range: each
	// statement reads at most about that many rows on each side. 0:
	// DefaultChunkSize.
	ChunkSize int
	// Pause is the time to wait between two ranges, to bound the load the
	// check puts on the databases. 0: none.
	Pause time.Duration
	// RecheckDelay is how long to wait, after a table's first pass, before
	// checking the ranges that differed again (changes in flight in the
	// live sync make false alarms); only ranges that still differ are
	// reported. 0: DefaultRecheckDelay; negative: no recheck.
	RecheckDelay time.Duration
	// StatementTimeout bounds each statement on the server (at least 1ms).
	// 0: the server's setting.
	StatementTimeout time.Duration
	// Logger receives logs. nil: slog.Default().
	Logger *slog.Logger
}

// Checker compares two PostgreSQL databases table by table: row counts and
// checksums of the synced columns per key range. It takes no locks and runs
// no long transactions: every statement reads one range of one side. It is
// safe for concurrent use.
type Checker struct {
	pools [2]*pgxpool.Pool
	cfg   Config
	log   *slog.Logger

	beforeRecheck func() // test hook: runs after the recheck delay
}

// NewChecker returns a Checker of the tables in cfg between the databases
// behind a (side A) and b (side B). The caller keeps ownership of the pools.
func NewChecker(a, b *pgxpool.Pool, cfg Config) (*Checker, error) {
	var errs []error
	if a == nil || b == nil {
		errs = append(errs, &duplex.ConfigError{Field: "pool", Reason: "both pools are required"})
	}
	if len(cfg.Tables) == 0 {
		errs = append(errs, &duplex.ConfigError{Field: "Tables", Reason: "is empty"})
	}
	for i, t := range cfg.Tables {
		if t.Table.Schema == "" || t.Table.Name == "" {
			errs = append(errs, &duplex.ConfigError{Field: "Tables[" + strconv.Itoa(i) + "]",
				Reason: fmt.Sprintf("table %q is not schema-qualified", t.Table.String())})
		}
	}
	if cfg.ChunkSize < 0 {
		errs = append(errs, &duplex.ConfigError{Field: "ChunkSize", Reason: "is negative"})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg.Tables = slices.Clone(cfg.Tables)
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.RecheckDelay == 0 {
		cfg.RecheckDelay = DefaultRecheckDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Checker{pools: [2]*pgxpool.Pool{a, b}, cfg: cfg, log: cfg.Logger.With("component", "parity")}, nil
}

// Report is the result of checking one table.
type Report struct {
	// Table is the table checked.
	Table duplex.Table
	// RowsA and RowsB are the rows each side held, summed over the ranges
	// as they were read (the data may change during the check).
	RowsA, RowsB int64
	// Ranges is the number of key ranges compared.
	Ranges int
	// Mismatched are the ranges whose count or checksum still differed on
	// the recheck, in key order.
	Mismatched []Range
	// FalseAlarms counts ranges that differed at first and agreed on the
	// recheck (changes in flight).
	FalseAlarms int
	// Started is when the check began; Duration how long it took.
	Started  time.Time
	Duration time.Duration
	// Err is set when the check failed; the other fields then describe what
	// was done until then. It is only set on reports passed to Run's
	// callback (Check and CheckTable return the error).
	Err error

	meta *tableMeta
}

// Clean reports whether the check completed and found no difference.
func (r *Report) Clean() bool { return r.Err == nil && len(r.Mismatched) == 0 }

// Range is a key range: the keys after Lo up to and including Hi, compared
// in the table's key order.
type Range struct {
	// Lo is the exclusive lower bound; nil: from the first key.
	Lo duplex.Key
	// Hi is the inclusive upper bound; nil: to the last key.
	Hi duplex.Key
	// CountA and CountB are the rows in the range on each side.
	CountA, CountB int64

	lo, hi []string // bounds as PostgreSQL text, nil when open
	sumA   string
	sumB   string
}

// String renders the range as "(lo, hi]" for logs and errors.
func (r Range) String() string {
	lo, hi := "-inf", "+inf"
	if r.Lo != nil {
		lo = r.Lo.String()
	}
	if r.Hi != nil {
		hi = r.Hi.String()
	}
	return "(" + lo + ", " + hi + "]"
}

// Check checks every configured table in turn and returns their reports.
// It stops at the first error (the reports of the tables done are
// returned).
func (c *Checker) Check(ctx context.Context) ([]*Report, error) {
	out := make([]*Report, 0, len(c.cfg.Tables))
	for _, t := range c.cfg.Tables {
		r, err := c.check(ctx, t)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// CheckTable checks one of the configured tables. On error, the report
// (when not nil) says how far the check got.
func (c *Checker) CheckTable(ctx context.Context, table duplex.Table) (*Report, error) {
	for _, t := range c.cfg.Tables {
		if t.Table == table {
			return c.check(ctx, t)
		}
	}
	return nil, duplex.Permanent(fmt.Errorf("reconcile: table %s is not configured for the check", table))
}

// Run checks every table now and then every interval until ctx ends, when it
// returns nil. onReport (may be nil) is called with every table's report,
// also for failed checks (Report.Err), which are logged and do not stop Run.
func (c *Checker) Run(ctx context.Context, every time.Duration, onReport func(context.Context, *Report)) error {
	if every <= 0 {
		return duplex.Permanent(errors.New("reconcile: Run: the interval must be positive"))
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, tc := range c.cfg.Tables {
			r, err := c.check(ctx, tc)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				c.log.WarnContext(ctx, "parity check failed", "table", tc.Table.String(), slog.Any("err", err))
				if r == nil {
					r = &Report{Table: tc.Table}
				}
				r.Err = err
			}
			if onReport != nil {
				onReport(ctx, r)
			}
		}
		t.Reset(every)
	}
}

// check walks the key space of one table: side A's keys in chunks, then
// side B's keys after A's last key, comparing each range on both sides.
func (c *Checker) check(ctx context.Context, tc TableConfig) (*Report, error) {
	r := &Report{Table: tc.Table, Started: time.Now()}
	m, err := c.loadMeta(ctx, tc)
	if err != nil {
		return nil, err
	}
	r.meta = m
	var suspects []Range
	add := func(rg Range) {
		r.Ranges++
		c.log.DebugContext(ctx, "parity range", "table", m.table.String(), "range", rg.String(),
			"rows_a", rg.CountA, "rows_b", rg.CountB, "equal", rg.equal())
		if !rg.equal() {
			suspects = append(suspects, rg)
			return
		}
		r.RowsA += rg.CountA
		r.RowsB += rg.CountB
	}
	var lo []string
	driver := 0
	for {
		if err := c.pause(ctx, r.Ranges); err != nil {
			return r, err
		}
		count, sum, last, err := c.chunk(ctx, m, driver, lo)
		if err != nil {
			return r, err
		}
		full := count >= int64(c.cfg.ChunkSize)
		if driver == 0 && count == 0 {
			driver = 1 // side A has no keys after lo: B walks the rest
			continue
		}
		// The range is (lo, last], or (lo, +inf) for B's last chunk.
		hi := last
		if driver == 1 && !full {
			hi = nil
		}
		rg := Range{lo: lo, hi: hi}
		oCount, oSum, err := c.sum(ctx, m, 1-driver, lo, hi)
		if err != nil {
			return r, err
		}
		if driver == 0 {
			rg.CountA, rg.sumA, rg.CountB, rg.sumB = count, sum, oCount, oSum
		} else {
			rg.CountB, rg.sumB, rg.CountA, rg.sumA = count, sum, oCount, oSum
		}
		if rg.Lo, err = m.decodeKey(driver, lo); err != nil {
			return r, err
		}
		if rg.Hi, err = m.decodeKey(driver, hi); err != nil {
			return r, err
		}
		if rg.CountA > 0 || rg.CountB > 0 || r.Ranges == 0 {
			add(rg)
		}
		if hi == nil {
			break // the key space is covered
		}
		lo = hi
		if driver == 0 && !full {
			driver = 1 // A's last chunk: B walks on after A's last key
		}
	}
	if len(suspects) > 0 && c.cfg.RecheckDelay > 0 {
		if err := sleep(ctx, c.cfg.RecheckDelay); err != nil {
			return r, err
		}
		if c.beforeRecheck != nil {
			c.beforeRecheck()
		}
		for i, rg := range suspects {
			again := Range{Lo: rg.Lo, Hi: rg.Hi, lo: rg.lo, hi: rg.hi}
			for side := range 2 {
				count, sum, err := c.sum(ctx, m, side, rg.lo, rg.hi)
				if err != nil {
					return r, err
				}
				if side == 0 {
					again.CountA, again.sumA = count, sum
				} else {
					again.CountB, again.sumB = count, sum
				}
			}
			suspects[i] = again
			if again.equal() {
				r.FalseAlarms++
			}
		}
	}
	for _, rg := range suspects {
		if !rg.equal() {
			r.Mismatched = append(r.Mismatched, rg)
		}
		r.RowsA += rg.CountA
		r.RowsB += rg.CountB
	}
	r.Duration = time.Since(r.Started)
	c.log.InfoContext(ctx, "parity checked", "table", m.table.String(), "rows_a", r.RowsA, "rows_b", r.RowsB,
		"ranges", r.Ranges, "mismatched", len(r.Mismatched), "false_alarms", r.FalseAlarms, "duration", r.Duration)
	return r, nil
}

func (rg Range) equal() bool { return rg.CountA == rg.CountB && rg.sumA == rg.sumB }

// chunk reads side's next ChunkSize rows after lo in key order: their
// count, the sum of their row hashes and the last key (nil when none).
func (c *Checker) chunk(ctx context.Context, m *tableMeta, side int, lo []string) (count int64, sum string, last []string, err error) {
	err = c.query(ctx, side, m.chunkSQL(side, lo != nil, c.cfg.ChunkSize), lo, func(raw [][]byte) error {
		var err error
		if count, err = strconv.ParseInt(string(raw[0]), 10, 64); err != nil {
			return err
		}
		sum = string(raw[1])
		if raw[2] != nil {
			last = make([]string, len(m.key))
			for i := range m.key {
				last[i] = string(raw[2+i])
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("reconcile: table %s: %w", m.table, err)
	}
	return count, sum, last, err
}

// sum counts the rows of side in the range (lo, hi] and sums their row
// hashes.
func (c *Checker) sum(ctx context.Context, m *tableMeta, side int, lo, hi []string) (count int64, sum string, err error) {
	args := append(slices.Clone(lo), hi...)
	err = c.query(ctx, side, m.sumSQL(side, lo != nil, hi != nil), args, func(raw [][]byte) error {
		var err error
		count, err = strconv.ParseInt(string(raw[0]), 10, 64)
		sum = string(raw[1])
		return err
	})
	if err != nil {
		err = fmt.Errorf("reconcile: table %s: %w", m.table, err)
	}
	return count, sum, err
}

// pinSettings fixes, for one transaction, the settings that shape values'
// text form, so that both sides render equal values equally whatever their
// defaults (the logical replication source and the applier's Lookup pin the
// same ones; TimeZone and lc_monetary matter here because values are hashed
// as text rather than decoded).
const pinSettings = "SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL IntervalStyle = 'postgres'; " +
	"SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = 'hex'; SET LOCAL TimeZone = 'UTC'; " +
	"SET LOCAL lc_monetary = 'C'"

// query runs one read-only statement on a side, in a short transaction with
// the output settings pinned, and calls fn with each row's text values.
func (c *Checker) query(ctx context.Context, side int, sql string, args []string, fn func(raw [][]byte) error) error {
	err := pgx.BeginTxFunc(ctx, c.pools[side], pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		pin := pinSettings
		if c.cfg.StatementTimeout > 0 {
			ms := max(c.cfg.StatementTimeout.Milliseconds(), 1) // 0 would mean no timeout
			pin += "; SET LOCAL statement_timeout = " + strconv.FormatInt(ms, 10)
		}
		if _, err := tx.Exec(ctx, pin); err != nil {
			return err
		}
		qargs := make([]any, 0, len(args)+1)
		qargs = append(qargs, pgx.QueryResultFormats{pgx.TextFormatCode})
		for _, a := range args {
			qargs = append(qargs, a)
		}
		rows, err := tx.Query(ctx, sql, qargs...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := fn(rows.RawValues()); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	if err != nil {
		return pgutil.Classify(fmt.Errorf("side %s: %w", sideName(side), err))
	}
	return nil
}

func sideName(side int) string {
	if side == 0 {
		return SideA
	}
	return SideB
}

// pause waits Config.Pause before every range but the first.
func (c *Checker) pause(ctx context.Context, done int) error {
	if done == 0 || c.cfg.Pause <= 0 {
		return ctx.Err()
	}
	return sleep(ctx, c.cfg.Pause)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// column is a table column on one side.
type column struct {
	name string
	typ  string // qualified type name without typmod, for casts
	base uint32 // base type OID (domains resolved), for decoding
	pk   int    // position in the primary key, 0 if not in it
}

// sideMeta is what one side's catalog says about the compared columns.
type sideMeta struct {
	keyTypes  []string
	keyDecode []func([]byte) (any, error)
}

// tableMeta is what the Checker knows about one table; it is read again
// for every check, so schema changes are picked up.
type tableMeta struct {
	table duplex.Table
	ident string
	key   []string // key column names, in order
	cols  []string // compared column names (key included)
	sides [2]sideMeta
	keyID string // quoted key columns, comma-separated
	keyDn string // the same, each DESC
	row   string // ROW(compared columns)
}

const columnsQuery = `
SELECT a.attname,
	quote_ident(tn.nspname) || '.' || quote_ident(ty.typname),
	CASE WHEN ty.typtype = 'd' THEN
		CASE WHEN bt.typtype = 'd' THEN bt.typbasetype ELSE bt.oid END
	ELSE ty.oid END,
	coalesce((SELECT k.ord FROM unnest(pk.indkey) WITH ORDINALITY AS k(attnum, ord) WHERE k.attnum = a.attnum), 0)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
JOIN pg_catalog.pg_namespace tn ON tn.oid = ty.typnamespace
LEFT JOIN pg_catalog.pg_type bt ON bt.oid = ty.typbasetype
LEFT JOIN pg_catalog.pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
ORDER BY a.attnum`

func (c *Checker) columns(ctx context.Context, side int, t duplex.Table) ([]column, error) {
	rows, err := c.pools[side].Query(ctx, columnsQuery, t.Schema, t.Name)
	if err != nil {
		return nil, pgutil.Classify(fmt.Errorf("reconcile: side %s: read the columns of %s: %w", sideName(side), t, err))
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var col column
		err := r.Scan(&col.name, &col.typ, &col.base, &col.pk)
		return col, err
	})
	if err != nil {
		return nil, pgutil.Classify(fmt.Errorf("reconcile: side %s: read the columns of %s: %w", sideName(side), t, err))
	}
	if len(cols) == 0 {
		return nil, duplex.Permanent(fmt.Errorf("reconcile: table %s does not exist on side %s", t, sideName(side)))
	}
	return cols, nil
}

func (c *Checker) loadMeta(ctx context.Context, tc TableConfig) (*tableMeta, error) {
	t := tc.Table
	var byName [2]map[string]column
	var order []column
	for side := range 2 {
		cols, err := c.columns(ctx, side, t)
		if err != nil {
			return nil, err
		}
		byName[side] = make(map[string]column, len(cols))
		for _, col := range cols {
			byName[side][col.name] = col
		}
		if side == 0 {
			order = cols
		}
	}
	m := &tableMeta{table: t, ident: pgutil.QuoteTable(t)}
	m.key = slices.Clone(tc.Key)
	if m.key == nil {
		pk := make([]column, 0, 2)
		for _, col := range order {
			if col.pk > 0 {
				pk = append(pk, col)
			}
		}
		slices.SortFunc(pk, func(x, y column) int { return x.pk - y.pk })
		for _, col := range pk {
			m.key = append(m.key, col.name)
		}
	}
	if len(m.key) == 0 {
		return nil, duplex.Permanent(fmt.Errorf("reconcile: table %s has no primary key on side a; set TableConfig.Key", t))
	}
	for side := range 2 {
		for _, k := range m.key {
			col, ok := byName[side][k]
			if !ok {
				return nil, duplex.Permanent(fmt.Errorf("reconcile: table %s: key column %s is missing on side %s", t, k, sideName(side)))
			}
			m.sides[side].keyTypes = append(m.sides[side].keyTypes, col.typ)
			m.sides[side].keyDecode = append(m.sides[side].keyDecode, pgvalue.Decoder(col.base))
		}
	}
	excluded := func(name string) bool { return slices.Contains(tc.Exclude, name) && !slices.Contains(m.key, name) }
	if tc.Columns != nil {
		m.cols = slices.Clone(m.key)
		for _, name := range tc.Columns {
			if slices.Contains(m.cols, name) || excluded(name) {
				continue
			}
			for side := range 2 {
				if _, ok := byName[side][name]; !ok {
					return nil, duplex.Permanent(fmt.Errorf("reconcile: table %s: column %s is missing on side %s", t, name, sideName(side)))
				}
			}
			m.cols = append(m.cols, name)
		}
	} else {
		for _, col := range order {
			if _, ok := byName[1][col.name]; ok && !excluded(col.name) {
				m.cols = append(m.cols, col.name)
			}
		}
	}
	keyIdents := make([]string, len(m.key))
	desc := make([]string, len(m.key))
	for i, k := range m.key {
		keyIdents[i] = pgutil.QuoteIdent(k)
		desc[i] = keyIdents[i] + " DESC"
	}
	m.keyID = strings.Join(keyIdents, ", ")
	m.keyDn = strings.Join(desc, ", ")
	colIdents := make([]string, len(m.cols))
	for i, col := range m.cols {
		colIdents[i] = "t." + pgutil.QuoteIdent(col)
	}
	m.row = "pg_catalog.hashtextextended(ROW(" + strings.Join(colIdents, ", ") + ")::text, 0)"
	return m, nil
}

// bound returns the condition "(key) op ($first::text::type, ...)".
func (m *tableMeta) bound(side int, op string, first int) string {
	var b strings.Builder
	b.WriteString("(" + m.keyID + ") " + op + " (")
	for i, typ := range m.sides[side].keyTypes {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(first+i) + "::pg_catalog.text::" + typ)
	}
	b.WriteString(")")
	return b.String()
}

// where returns the WHERE clause of the range (lo, hi]; lo's parameters
// come first.
func (m *tableMeta) where(side int, lo, hi bool) string {
	var conds []string
	next := 1
	if lo {
		conds = append(conds, m.bound(side, ">", next))
		next += len(m.key)
	}
	if hi {
		conds = append(conds, m.bound(side, "<=", next))
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// chunkSQL reads the next n rows after lo in key order (through the
// primary key's index) and returns their count, the sum of their row
// hashes and the last key.
func (m *tableMeta) chunkSQL(side int, lo bool, n int) string {
	return "WITH s AS MATERIALIZED (SELECT " + m.keyID + ", " + m.row + " AS h FROM " + m.ident + " AS t" +
		m.where(side, lo, false) + " ORDER BY " + m.keyID + " LIMIT " + strconv.Itoa(n) + ")" +
		" SELECT (SELECT count(*) FROM s), (SELECT coalesce(sum(h), 0) FROM s), l.*" +
		" FROM (SELECT) AS one LEFT JOIN LATERAL (SELECT " + m.keyID + " FROM s ORDER BY " + m.keyDn + " LIMIT 1) AS l ON true"
}

// sumSQL counts the rows of the range and sums their row hashes.
func (m *tableMeta) sumSQL(side int, lo, hi bool) string {
	return "SELECT count(*), coalesce(sum(" + m.row + "), 0) FROM " + m.ident + " AS t" + m.where(side, lo, hi)
}

// rowsSQL lists the keys and row hashes of the range in key order, at most
// limit of them (0: all).
func (m *tableMeta) rowsSQL(side int, lo, hi bool, limit int) string {
	q := "SELECT " + m.keyID + ", " + m.row + " FROM " + m.ident + " AS t" + m.where(side, lo, hi) + " ORDER BY " + m.keyID
	if limit > 0 {
		q += " LIMIT " + strconv.Itoa(limit)
	}
	return q
}

// decodeKey turns a key's text form, as read on side, into a duplex.Key
// with the values the sync's sources and appliers use. nil stays nil.
func (m *tableMeta) decodeKey(side int, texts []string) (duplex.Key, error) {
	if texts == nil {
		return nil, nil
	}
	k := make(duplex.Key, len(m.key))
	for i, name := range m.key {
		v, err := m.sides[side].keyDecode[i]([]byte(texts[i]))
		if err != nil {
			return nil, duplex.Permanent(fmt.Errorf("reconcile: table %s: decode key column %s: %w", m.table, name, err))
		}
		k[i] = duplex.Column{Name: name, Value: v}
	}
	return k, nil
}
