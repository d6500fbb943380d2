package checkpg

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

func quoteTable(t duplex.Table) string { return pgutil.QuoteTable(t) }
func quoteIdent(s string) string       { return pgutil.QuoteIdent(s) }

// onDelete spells pg_constraint.confdeltype.
var onDelete = map[string]string{"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

// foreignKeys looks at the foreign keys of the table (to synced tables and
// to others) and at those of tables not synced that reference it.
func (tc *tableCheck) foreignKeys() {
	a, b := tc.cats[0], tc.cats[1]
	tc.aspect("foreign keys", defs(a.fks), defs(b.fks))
	for _, name := range unionByName(a.fks, b.fks) {
		fa, fb := byName(a.fks, name), byName(b.fks, name)
		if fa == nil || fb == nil || fa.def != fb.def {
			tc.differs("foreign_keys", name, fa, fb, "a row one side accepts can be refused (or left without its parent) on the other, and a delete cascades on one side only")
		}
	}
	for i, cat := range tc.cats {
		side := tc.sides[i]
		for _, fk := range cat.fks {
			switch {
			case !tc.synced[fk.table]:
				tc.add("foreign_keys", duplex.Warning, fmt.Sprintf("%s on %s references %s, which is not synced", fk.name, side.Name, fk.table),
					"a row synced to the other side may find no parent there: "+tc.mode(i, "applied rows are not checked against foreign keys, so it is written without its parent", "the apply fails and the change lands in the dead-letter queue"),
					fmt.Sprintf("sync %s too, or make sure both sides hold the same rows of it", fk.table))
			case side.replica:
				tc.add("foreign_keys", duplex.Fine, fmt.Sprintf("%s on %s references synced %s (ON DELETE %s)", fk.name, side.Name, fk.table, onDelete[fk.onDelete]),
					"applied in replica mode, rows are not checked against it, so a transaction's parent and child apply in any order; the source checked them, and the rows its cascades deleted arrive as deletes of their own. A child inserted on one side while the other deletes its parent is kept on both sides without the parent", "")
			case fk.onDelete == "c" || fk.onDelete == "n" || fk.onDelete == "d" || (fk.deferrable && fk.deferred):
				tc.add("foreign_keys", duplex.Fine, fmt.Sprintf("%s on %s references synced %s (ON DELETE %s%s)", fk.name, side.Name, fk.table, onDelete[fk.onDelete], deferredText(fk)),
					"checked on apply; a parent's delete from the other side is applied before its children's deletes, which this constraint accepts", "")
			default:
				tc.add("foreign_keys", duplex.Warning, fmt.Sprintf("%s on %s references synced %s (ON DELETE %s), checked at once", fk.name, side.Name, fk.table, onDelete[fk.onDelete]),
					"the role may not apply in replica mode, so foreign keys are checked on apply: a cascading delete on the other side arrives as the parent's delete, then the children's, and the parent's delete is refused while its children are still here",
					fmt.Sprintf("on %s: ALTER TABLE %s DROP CONSTRAINT %s, ADD CONSTRAINT %s %s DEFERRABLE INITIALLY DEFERRED (or grant the right to set session_replication_role)",
						side.Name, quote(tc.t), quoteIdent(fk.name), quoteIdent(fk.name), strings.TrimSuffix(strings.TrimSuffix(fk.def, " DEFERRABLE"), " NOT DEFERRABLE")))
			}
		}
		for _, in := range cat.incoming {
			if tc.synced[in.table] {
				continue
			}
			tc.add("foreign_keys", duplex.Warning, fmt.Sprintf("%s of %s (not synced) on %s references this table (ON DELETE %s)", in.name, in.table, side.Name, onDelete[in.onDelete]),
				"a delete synced from the other side "+tc.mode(i, "is not checked against it and does not cascade: rows of "+in.table.String()+" are left referencing a deleted row", "is checked against it: it cascades as the constraint says, or fails and lands in the dead-letter queue"),
				fmt.Sprintf("sync %s too", in.table))
		}
	}
}

func deferredText(fk constraint) string {
	if fk.deferrable && fk.deferred {
		return ", DEFERRABLE INITIALLY DEFERRED"
	}
	return ""
}

// mode picks the text for side i's apply mode.
func (tc *tableCheck) mode(i int, replica, origin string) string {
	if tc.sides[i].replica {
		return replica
	}
	return origin
}

// fires reports whether trigger name of the table is listed in Triggers.Fire.
func (tc *tableCheck) fires(name string) bool {
	for _, f := range tc.c.cfg.Triggers.Fire {
		if f == tc.t.Schema+"."+tc.t.Name+"."+name || (tc.t.Schema == "public" && f == tc.t.Name+"."+name) {
			return true
		}
	}
	return false
}

// triggers reports which user triggers fire on applied rows.
func (tc *tableCheck) triggers() {
	list := func(c *tableCat) string {
		out := make([]string, len(c.triggers))
		for i, t := range c.triggers {
			out[i] = t.name + map[string]string{"O": "", "A": " (ALWAYS)", "R": " (REPLICA)", "D": " (disabled)"}[t.enabled]
		}
		return strings.Join(out, ", ")
	}
	tc.aspect("triggers", list(tc.cats[0]), list(tc.cats[1]))
	for i, cat := range tc.cats {
		side := tc.sides[i]
		for _, tg := range cat.triggers {
			what := fmt.Sprintf("trigger %s on %s", tg.name, side.Name)
			alter := "ALTER TABLE " + quote(tc.t) + " ENABLE TRIGGER " + quoteIdent(tg.name)
			const harm = "a trigger that changes the row (NEW.updated_at := clock_timestamp()) makes the sides differ for good, since the sync never sends its own writes back; an audit trigger logs each change on both sides"
			switch {
			case tg.enabled == "D":
			case tc.fires(tg.name):
				tc.add("triggers", duplex.Fine, what+" fires on applied rows, as configured", "", "")
			case tg.enabled == "A":
				tc.add("triggers", duplex.Warning, what+" is ENABLE ALWAYS: it fires on applied rows too", harm,
					"if it should fire for the application's writes only, on "+side.Name+": "+alter+"; if on applied rows too, list it in the triggers to fire (-fire-triggers)")
			case tg.enabled == "R":
				tc.add("triggers", duplex.Warning, what+" is ENABLE REPLICA: it fires on applied rows only", harm,
					"on "+side.Name+": "+alter+" (or list it in the triggers to fire)")
			case tc.c.cfg.Triggers.All:
				tc.add("triggers", duplex.Warning, what+" fires on applied rows (every trigger is enabled for the sync)", harm,
					"apply in replica mode (drop -all-triggers), listing in -fire-triggers the triggers meant to fire")
			case !side.replica:
				tc.add("triggers", duplex.Warning, what+" fires on applied rows: the role "+side.role+" may not set session_replication_role", harm,
					"GRANT SET ON PARAMETER session_replication_role TO "+pgx.Identifier{side.role}.Sanitize()+" (as a superuser on "+side.Name+")")
			default:
				tc.add("triggers", duplex.Fine, what+" does not fire on applied rows (replica mode)",
					"it fires for the application's own writes; list it in -fire-triggers to fire it on applied rows too", "")
			}
		}
	}
}

// replicaIdentity checks that the change capture gets whole before images.
func (tc *tableCheck) replicaIdentity() {
	names := map[string]string{"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}
	tc.aspect("replica identity", names[tc.cats[0].identity], names[tc.cats[1].identity])
	if tc.c.cfg.ReplicaIdentity == "" {
		return
	}
	for i, cat := range tc.cats {
		side := tc.sides[i].Name
		switch {
		case cat.identity == "f":
			tc.add("replica_identity", duplex.Fine, "REPLICA IDENTITY FULL on "+side, "updates carry whole before images, so conflicts are told per field", "")
		case tc.c.cfg.ReplicaIdentity == "set":
			tc.add("replica_identity", duplex.Fine, "REPLICA IDENTITY "+names[cat.identity]+" on "+side+": set to FULL at start", "updates must carry whole before images to tell conflicts per field", "")
		default:
			tc.add("replica_identity", duplex.Blocker, "REPLICA IDENTITY "+names[cat.identity]+" on "+side,
				"logical replication needs whole before images (FULL) to tell which fields each side changed",
				"on "+side+": ALTER TABLE "+quote(tc.t)+" REPLICA IDENTITY FULL (or let the sync set it)")
		}
	}
}

// sample compares up to SampleRows rows picked on each side, column by
// column, in text form, and reports the first key and column that differ.
func (tc *tableCheck) sample(ctx context.Context) error {
	n := tc.c.cfg.SampleRows
	if n < 0 {
		return nil
	}
	a, b := tc.cats[0], tc.cats[1]
	var cols []string
	for _, c := range a.columns {
		if b.column(c.name) != nil && !slices.Contains(a.key, c.name) {
			cols = append(cols, c.name)
		}
	}
	keyTypes := make([]string, len(a.key))
	for i, k := range a.key {
		keyTypes[i] = a.column(k).typ
	}
	// Keys picked on each side, both sides' rows read for all of them.
	seen := map[string][]string{}
	var keys [][]string
	for i, cat := range tc.cats {
		picked, err := tc.pick(ctx, i, cat, n)
		if err != nil {
			return err
		}
		for _, k := range picked {
			if id := strings.Join(k, "\x00"); seen[id] == nil {
				seen[id] = k
				keys = append(keys, k)
			}
		}
	}
	if len(keys) == 0 {
		tc.aspect("sample", "no rows", "no rows")
		return nil
	}
	var rows [2]map[string][]*string
	for i := range tc.sides {
		r, err := tc.read(ctx, i, keys, keyTypes, cols)
		if err != nil {
			return err
		}
		rows[i] = r
	}
	differ, first := 0, ""
	for _, k := range keys {
		id := strings.Join(k, "\x00")
		ra, rb := rows[0][id], rows[1][id]
		what := ""
		switch {
		case ra == nil && rb == nil:
			continue // deleted meanwhile
		case ra == nil || rb == nil:
			missing := tc.sides[0].Name
			if rb == nil {
				missing = tc.sides[1].Name
			}
			what = "missing on " + missing
		default:
			for j, c := range cols {
				if !equalText(ra[j], rb[j]) {
					what = "column " + c + " differs"
					break
				}
			}
		}
		if what != "" {
			differ++
			if first == "" {
				first = fmt.Sprintf("key (%s)=(%s): %s", strings.Join(a.key, ", "), strings.Join(k, ", "), what)
			}
		}
	}
	summary := fmt.Sprintf("%d of %d rows differ", differ, len(keys))
	tc.aspect("sample", summary, summary)
	if differ > 0 {
		tc.add("sample", duplex.Warning, fmt.Sprintf("%d of %d sampled rows differ between the sides; first: %s", differ, len(keys), first),
			"the sync carries changes made from now on; rows that differ already stay different until they are reconciled",
			"reconcile the table before relying on it (package reconcile)")
	} else {
		tc.add("sample", duplex.Fine, fmt.Sprintf("%d sampled rows are the same on both sides", len(keys)), "", "")
	}
	return nil
}

func equalText(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// pinned settings under which both sides' values are read as text.
const pinned = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL IntervalStyle = 'postgres'; " +
	"SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = 'hex'"

// sampleAbove is the row count above which a table's sample keys are
// drawn from random pages rather than taken from the start of its key.
const sampleAbove = 100_000

// pick returns up to n keys of side i, in text form: the first n by key
// for a small table, a sample of a large one (TABLESAMPLE SYSTEM: whole
// pages picked at random, so the table is not read through).
func (tc *tableCheck) pick(ctx context.Context, i int, cat *tableCat, n int) ([][]string, error) {
	key := make([]string, len(cat.key))
	for j, k := range cat.key {
		key[j] = quoteIdent(k) + "::text"
	}
	from := quote(tc.t)
	if cat.rows > sampleAbove {
		// About 20 times the rows wanted, so that a draw of too few pages
		// is next to impossible.
		from += fmt.Sprintf(" TABLESAMPLE SYSTEM (%f)", min(100, 2000*float64(n)/float64(cat.rows)))
	}
	sql := "SELECT " + strings.Join(key, ", ") + " FROM " + from + " ORDER BY " + strings.Join(quoteAll(cat.key), ", ") + fmt.Sprintf(" LIMIT %d", n)
	var out [][]string
	err := pgx.BeginTxFunc(ctx, tc.sides[i].Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinned); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			vals := make([]string, len(key))
			ptrs := make([]any, len(key))
			for j := range vals {
				ptrs[j] = &vals[j]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return err
			}
			out = append(out, vals)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, pgutil.Classify(fmt.Errorf("checkpg: %s: table %s: sample keys: %w", tc.sides[i].Name, tc.t, err))
	}
	return out, nil
}

// read reads cols of the rows of keys on side i, in text form, by key.
func (tc *tableCheck) read(ctx context.Context, i int, keys [][]string, keyTypes, cols []string) (map[string][]*string, error) {
	key := tc.cats[0].key
	args := make([]any, len(key))
	u := make([]string, len(key))
	cast := make([]string, len(key))
	for j := range key {
		col := make([]string, len(keys))
		for r, k := range keys {
			col[r] = k[j]
		}
		args[j] = col
		u[j] = fmt.Sprintf("$%d::text[]", j+1)
		cast[j] = fmt.Sprintf("u.k%d::%s", j+1, keyTypes[j])
	}
	names := make([]string, len(key))
	for j := range key {
		names[j] = fmt.Sprintf("k%d", j+1)
	}
	sel := make([]string, 0, len(key)+len(cols))
	for _, k := range key {
		sel = append(sel, "t."+quoteIdent(k)+"::text")
	}
	for _, c := range cols {
		sel = append(sel, "t."+quoteIdent(c)+"::text")
	}
	sql := "SELECT " + strings.Join(sel, ", ") + " FROM " + quote(tc.t) + " t WHERE (" + strings.Join(prefixAll("t.", key), ", ") +
		") IN (SELECT " + strings.Join(cast, ", ") + " FROM unnest(" + strings.Join(u, ", ") + ") AS u(" + strings.Join(names, ", ") + "))"
	out := map[string][]*string{}
	err := pgx.BeginTxFunc(ctx, tc.sides[i].Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinned); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			vals := make([]*string, len(sel))
			ptrs := make([]any, len(sel))
			for j := range vals {
				ptrs[j] = &vals[j]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return err
			}
			id := make([]string, len(key))
			for j := range key {
				id[j] = *vals[j]
			}
			out[strings.Join(id, "\x00")] = vals[len(key):]
		}
		return rows.Err()
	})
	if err != nil {
		return nil, pgutil.Classify(fmt.Errorf("checkpg: %s: table %s: read sampled rows: %w", tc.sides[i].Name, tc.t, err))
	}
	return out, nil
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = quoteIdent(n)
	}
	return out
}

func prefixAll(p string, names []string) []string {
	out := quoteAll(names)
	for i := range out {
		out[i] = p + out[i]
	}
	return out
}
