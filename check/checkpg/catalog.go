package checkpg

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// column is one column of a table as the catalog has it.
type column struct {
	name, typ string
	notNull   bool
	def       string // the default expression, "" for none
	identity  string // pg_attribute.attidentity: "", "a" (ALWAYS) or "d" (BY DEFAULT)
}

// constraint is a unique, check or foreign-key constraint (or a unique
// index without one).
type constraint struct {
	name string
	def  string // pg_get_constraintdef / pg_get_indexdef
	// Foreign keys only.
	table      duplex.Table // the other table (referenced, or referencing for incoming ones)
	deferrable bool
	deferred   bool
	onDelete   string // pg_constraint.confdeltype: a, r, c, n, d
}

// trigger is a user trigger.
type trigger struct {
	name, enabled, def string // enabled: pg_trigger.tgenabled: O, A, R or D
}

// sequence is a sequence feeding a key column (serial, identity or a
// nextval default).
type sequence struct {
	column           string
	name             duplex.Table // schema-qualified sequence name
	identity         bool
	typ              string
	increment        int64
	min, max         int64
	next             int64 // the value nextval would return
	comment          string
	maxKey           int64 // the largest value in the column
	hasRows          bool
	maxKeyOtherSide  int64 // filled in by the comparison
	otherSideHasRows bool
}

// tableCat is what one side's catalog says about one table.
type tableCat struct {
	exists    bool
	oid       uint32
	identity  string // relreplident
	columns   []column
	key       []string
	uniques   []constraint
	checks    []constraint
	fks       []constraint // this table references another
	incoming  []constraint // another table references this one
	triggers  []trigger
	sequences []sequence
	rows      int64
	estimated bool // rows is the planner's estimate (a big table)
}

func (c *tableCat) column(name string) *column {
	for i := range c.columns {
		if c.columns[i].name == name {
			return &c.columns[i]
		}
	}
	return nil
}

// exactCountLimit is the estimated size above which a table's rows are not
// counted but estimated (count(*) reads the whole table).
const exactCountLimit = 1_000_000

// inspect reads table t's catalog on one side.
func inspect(ctx context.Context, pool *pgxpool.Pool, side string, t duplex.Table) (*tableCat, error) {
	c := &tableCat{}
	wrap := func(what string, err error) error {
		return pgutil.Classify(fmt.Errorf("checkpg: %s: table %s: read %s: %w", side, t, what, err))
	}
	var reltuples float64
	err := pool.QueryRow(ctx, `SELECT c.oid, c.relreplident::text, c.reltuples FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, t.Schema, t.Name).Scan(&c.oid, &c.identity, &reltuples)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, nil
	}
	if err != nil {
		return nil, wrap("the catalog entry", err)
	}
	c.exists = true
	rows, err := pool.Query(ctx, `SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
			coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity::text
		FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, c.oid)
	if err != nil {
		return nil, wrap("the columns", err)
	}
	var col column
	if _, err := pgx.ForEachRow(rows, []any{&col.name, &col.typ, &col.notNull, &col.def, &col.identity}, func() error {
		c.columns = append(c.columns, col)
		return nil
	}); err != nil {
		return nil, wrap("the columns", err)
	}
	rows, err = pool.Query(ctx, `SELECT a.attname FROM pg_catalog.pg_index i
		JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
		JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord`, c.oid)
	if err != nil {
		return nil, wrap("the primary key", err)
	}
	if c.key, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, wrap("the primary key", err)
	}
	// Unique constraints and unique indexes other than the primary key.
	rows, err = pool.Query(ctx, `SELECT coalesce(co.conname, ci.relname), coalesce(pg_catalog.pg_get_constraintdef(co.oid), pg_catalog.pg_get_indexdef(i.indexrelid))
		FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
		LEFT JOIN pg_catalog.pg_constraint co ON co.conindid = i.indexrelid AND co.conrelid = i.indrelid AND co.contype = 'u'
		WHERE i.indrelid = $1 AND i.indisunique AND NOT i.indisprimary ORDER BY 1`, c.oid)
	if err != nil {
		return nil, wrap("the unique constraints", err)
	}
	var con constraint
	if _, err := pgx.ForEachRow(rows, []any{&con.name, &con.def}, func() error {
		c.uniques = append(c.uniques, con)
		return nil
	}); err != nil {
		return nil, wrap("the unique constraints", err)
	}
	rows, err = pool.Query(ctx, `SELECT conname, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint
		WHERE conrelid = $1 AND contype = 'c' ORDER BY 1`, c.oid)
	if err != nil {
		return nil, wrap("the check constraints", err)
	}
	con = constraint{}
	if _, err := pgx.ForEachRow(rows, []any{&con.name, &con.def}, func() error {
		c.checks = append(c.checks, con)
		return nil
	}); err != nil {
		return nil, wrap("the check constraints", err)
	}
	for _, dir := range []struct {
		own, other string
		out        *[]constraint
	}{{"conrelid", "confrelid", &c.fks}, {"confrelid", "conrelid", &c.incoming}} {
		rows, err = pool.Query(ctx, `SELECT co.conname, pg_catalog.pg_get_constraintdef(co.oid), n.nspname, r.relname,
				co.condeferrable, co.condeferred, co.confdeltype::text
			FROM pg_catalog.pg_constraint co JOIN pg_catalog.pg_class r ON r.oid = co.`+dir.other+`
			JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
			WHERE co.`+dir.own+` = $1 AND co.contype = 'f' ORDER BY 1`, c.oid)
		if err != nil {
			return nil, wrap("the foreign keys", err)
		}
		con = constraint{}
		if _, err := pgx.ForEachRow(rows, []any{&con.name, &con.def, &con.table.Schema, &con.table.Name, &con.deferrable, &con.deferred, &con.onDelete}, func() error {
			*dir.out = append(*dir.out, con)
			return nil
		}); err != nil {
			return nil, wrap("the foreign keys", err)
		}
	}
	rows, err = pool.Query(ctx, `SELECT tgname, tgenabled::text, pg_catalog.pg_get_triggerdef(oid) FROM pg_catalog.pg_trigger
		WHERE tgrelid = $1 AND NOT tgisinternal ORDER BY 1`, c.oid)
	if err != nil {
		return nil, wrap("the triggers", err)
	}
	var tg trigger
	if _, err := pgx.ForEachRow(rows, []any{&tg.name, &tg.enabled, &tg.def}, func() error {
		c.triggers = append(c.triggers, tg)
		return nil
	}); err != nil {
		return nil, wrap("the triggers", err)
	}
	if err := inspectSequences(ctx, pool, c, t, wrap); err != nil {
		return nil, err
	}
	if reltuples > exactCountLimit {
		c.rows, c.estimated = int64(reltuples), true
	} else if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgutil.QuoteTable(t)).Scan(&c.rows); err != nil {
		return nil, wrap("the row count", err)
	}
	return c, nil
}

// inspectSequences finds the sequences feeding key columns: owned by one
// (serial, identity) or named by its default (nextval).
func inspectSequences(ctx context.Context, pool *pgxpool.Pool, c *tableCat, t duplex.Table, wrap func(string, error) error) error {
	rows, err := pool.Query(ctx, `SELECT DISTINCT a.attname, sn.nspname, s.relname, a.attidentity <> '',
			pg_catalog.format_type(q.seqtypid, NULL), q.seqincrement, q.seqmin, q.seqmax,
			coalesce(pg_catalog.obj_description(s.oid, 'pg_class'), '')
		FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::regclass AND (
			(d.classid = 'pg_catalog.pg_class'::regclass AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum AND d.deptype IN ('a', 'i'))
			OR (d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.objid = (SELECT ad.oid FROM pg_catalog.pg_attrdef ad WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum)))
		JOIN pg_catalog.pg_class s ON s.oid = CASE WHEN d.classid = 'pg_catalog.pg_class'::regclass THEN d.objid ELSE d.refobjid END AND s.relkind = 'S'
		JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
		JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY($2) ORDER BY 1`, c.oid, c.key)
	if err != nil {
		return wrap("the key's sequences", err)
	}
	var s sequence
	if _, err := pgx.ForEachRow(rows, []any{&s.column, &s.name.Schema, &s.name.Name, &s.identity, &s.typ, &s.increment, &s.min, &s.max, &s.comment}, func() error {
		c.sequences = append(c.sequences, s)
		return nil
	}); err != nil {
		return wrap("the key's sequences", err)
	}
	for i := range c.sequences {
		s := &c.sequences[i]
		var last int64
		var called bool
		if err := pool.QueryRow(ctx, "SELECT last_value, is_called FROM "+pgutil.QuoteTable(s.name)).Scan(&last, &called); err != nil {
			return wrap("sequence "+s.name.String(), err)
		}
		s.next = last
		if called {
			s.next = last + s.increment
		}
		var maxKey *int64
		err := pool.QueryRow(ctx, "SELECT max("+pgutil.QuoteIdent(s.column)+")::int8 FROM "+pgutil.QuoteTable(t)).Scan(&maxKey)
		if err != nil {
			return wrap("the largest "+s.column, err)
		}
		if maxKey != nil {
			s.maxKey, s.hasRows = *maxKey, true
		} else {
			s.maxKey = math.MinInt64
		}
	}
	return nil
}
