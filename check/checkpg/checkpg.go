package checkpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
)

// Side is one of the two databases of a sync.
type Side struct {
	// Name names the system in the sync ("a", "crm"). Required.
	Name string
	// Pool reads (and, with fixes, alters) the database. The caller owns it.
	Pool *pgxpool.Pool
}

// SequenceFix is what Check does about keys fed by sequences on both
// sides.
type SequenceFix string

const (
	// SequencesRefuse reports keys fed by sequences on both sides as
	// blockers, with the SQL of both fixes. The default.
	SequencesRefuse SequenceFix = ""
	// SequencesInterleave makes A's sequences hand out odd numbers and B's
	// even ones (INCREMENT BY 2, restarted past the largest key of both
	// sides).
	SequencesInterleave SequenceFix = "interleave"
	// SequencesRanges splits each sequence's range in two: A keeps the
	// lower half (MAXVALUE), B gets the upper half (MINVALUE, RESTART).
	SequencesRanges SequenceFix = "ranges"
)

// Config configures a Checker.
type Config struct {
	// Sync names the sync; it is written into the comments of the
	// sequences a fix altered. Required.
	Sync string
	// A and B are the two databases. Required.
	A, B Side
	// Tables are the synced tables. Required.
	Tables []duplex.Table
	// Sequences says what to do about keys fed by sequences on both
	// sides. "": SequencesRefuse.
	Sequences SequenceFix
	// ReplicaIdentity says what the change capture needs: "full" (logical
	// replication with per-field conflicts: a table not REPLICA IDENTITY
	// FULL is a blocker), "set" (the source sets FULL itself at start:
	// fine) or "" (a polling source: not looked at).
	ReplicaIdentity string
	// Triggers is the appliers' trigger configuration (applypg.Config.Triggers).
	Triggers applypg.TriggerConfig
	// SampleRows is how many rows of each table the quick sample diff
	// compares. 0: 100; negative: no sample.
	SampleRows int
	// Logger receives logs. nil: slog.Default().
	Logger *slog.Logger
}

// Checker is the PostgreSQL duplex.Preflight: it reads both databases'
// catalogs and compares them table by table.
type Checker struct {
	cfg Config
	log *slog.Logger
}

var _ duplex.Preflight = (*Checker)(nil)

// New checks cfg and returns a Checker.
func New(cfg Config) (*Checker, error) {
	var errs []error
	if cfg.Sync == "" {
		errs = append(errs, &duplex.ConfigError{Field: "Sync", Reason: "is required"})
	}
	if cfg.A.Pool == nil || cfg.B.Pool == nil || cfg.A.Name == "" || cfg.B.Name == "" || cfg.A.Name == cfg.B.Name {
		errs = append(errs, &duplex.ConfigError{Field: "A/B", Reason: "both sides need a pool and different names"})
	}
	if len(cfg.Tables) == 0 {
		errs = append(errs, &duplex.ConfigError{Field: "Tables", Reason: "is empty"})
	}
	switch cfg.Sequences {
	case SequencesRefuse, SequencesInterleave, SequencesRanges:
	default:
		errs = append(errs, &duplex.ConfigError{Field: "Sequences", Reason: fmt.Sprintf("unknown fix %q (interleave, ranges)", cfg.Sequences)})
	}
	switch cfg.ReplicaIdentity {
	case "", "full", "set":
	default:
		errs = append(errs, &duplex.ConfigError{Field: "ReplicaIdentity", Reason: fmt.Sprintf("unknown %q (full, set or empty)", cfg.ReplicaIdentity)})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.SampleRows == 0 {
		cfg.SampleRows = 100
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Checker{cfg: cfg, log: cfg.Logger.With("component", "checkpg", "sync", cfg.Sync)}, nil
}

// sideState is what Check learned about one side as a whole.
type sideState struct {
	Side
	replica bool   // the applier will run in replica mode
	role    string // the role's name
}

// Check implements duplex.Preflight.
func (c *Checker) Check(ctx context.Context, p duplex.CheckParams) (*duplex.Report, error) {
	r := &duplex.Report{A: c.cfg.A.Name, B: c.cfg.B.Name}
	var sides [2]sideState
	for i, s := range []Side{c.cfg.A, c.cfg.B} {
		sides[i].Side = s
		if c.cfg.Triggers.All {
			continue
		}
		ok, role, err := applypg.CanSetReplicaRole(ctx, s.Pool)
		if err != nil {
			return nil, fmt.Errorf("checkpg: %s: %w", s.Name, err)
		}
		sides[i].replica, sides[i].role = ok, role
		if !ok {
			r.Findings = append(r.Findings, duplex.Finding{Check: "privileges", Severity: duplex.Warning,
				What: fmt.Sprintf("on %s the role %s may not set session_replication_role", s.Name, role),
				Why:  "the sync then applies with every trigger enabled (see the triggers findings) and checks foreign keys on apply",
				Fix:  applypg.ReplicaRoleFix(role) + "; (run as a superuser on " + s.Name + ")"})
		} else {
			r.Findings = append(r.Findings, duplex.Finding{Check: "privileges", Severity: duplex.Fine,
				What: fmt.Sprintf("on %s the sync applies with session_replication_role = replica", s.Name),
				Why:  "ordinary triggers and foreign-key checks do not run on applied rows, as with logical replication"})
		}
	}
	synced := make(map[duplex.Table]bool, len(c.cfg.Tables))
	for _, t := range c.cfg.Tables {
		synced[t] = true
	}
	for _, t := range c.cfg.Tables {
		var cats [2]*tableCat
		for i, s := range sides {
			cat, err := inspect(ctx, s.Pool, s.Name, t)
			if err != nil {
				return nil, err
			}
			cats[i] = cat
		}
		tr := duplex.TableReport{Table: t}
		tc := &tableCheck{c: c, t: t, sides: sides, cats: cats, synced: synced, report: &tr}
		if err := tc.run(ctx, p.Fix, &r.Done); err != nil {
			return nil, err
		}
		r.Tables = append(r.Tables, tr)
	}
	return r, nil
}

// tableCheck compares one table's two sides.
type tableCheck struct {
	c      *Checker
	t      duplex.Table
	sides  [2]sideState
	cats   [2]*tableCat
	synced map[duplex.Table]bool
	report *duplex.TableReport
}

func (tc *tableCheck) add(check string, sev duplex.Severity, what, why, fix string) {
	tc.report.Findings = append(tc.report.Findings, duplex.Finding{Table: tc.t, Check: check, Severity: sev, What: what, Why: why, Fix: fix})
}

func (tc *tableCheck) aspect(name, a, b string) {
	tc.report.Aspects = append(tc.report.Aspects, duplex.Aspect{Name: name, A: a, B: b})
}

func (tc *tableCheck) run(ctx context.Context, fix bool, done *[]string) error {
	a, b := tc.cats[0], tc.cats[1]
	if !a.exists || !b.exists {
		for i, cat := range tc.cats {
			if !cat.exists {
				tc.add("table", duplex.Blocker, fmt.Sprintf("table %s does not exist on %s", tc.t, tc.sides[i].Name),
					"there is nothing to sync it with", "create it on "+tc.sides[i].Name+" with the other side's definition")
			}
		}
		return nil
	}
	tc.columns()
	if !tc.key() {
		return nil
	}
	tc.constraints()
	tc.foreignKeys()
	tc.triggers()
	if err := tc.sequences(ctx, fix, done); err != nil {
		return err
	}
	tc.replicaIdentity()
	tc.aspect("rows", rowCount(a), rowCount(b))
	if a.rows != b.rows {
		tc.add("rows", duplex.Warning, fmt.Sprintf("%s rows on %s, %s on %s", rowCount(a), tc.sides[0].Name, rowCount(b), tc.sides[1].Name),
			"the sync carries changes made from now on; rows that differ already stay different until they are reconciled",
			"reconcile the table before relying on it (package reconcile, or Sync.Reconcile for rows known to agree)")
	} else {
		tc.add("rows", duplex.Fine, fmt.Sprintf("%s rows on each side", rowCount(a)), "", "")
	}
	return tc.sample(ctx)
}

func rowCount(c *tableCat) string {
	if c.estimated {
		return fmt.Sprintf("~%d", c.rows)
	}
	return fmt.Sprint(c.rows)
}

// columnText is a column as the side-by-side view shows it.
func columnText(c *column) string {
	if c == nil {
		return ""
	}
	s := c.typ
	if c.notNull {
		s += " NOT NULL"
	}
	switch c.identity {
	case "a":
		s += " GENERATED ALWAYS AS IDENTITY"
	case "d":
		s += " GENERATED BY DEFAULT AS IDENTITY"
	}
	if c.def != "" {
		s += " DEFAULT " + c.def
	}
	return s
}

// columns compares the columns: present, type, nullability, default.
func (tc *tableCheck) columns() {
	a, b := tc.cats[0], tc.cats[1]
	names := make([]string, 0, len(a.columns)+len(b.columns))
	for _, c := range a.columns {
		names = append(names, c.name)
	}
	for _, c := range b.columns {
		if a.column(c.name) == nil {
			names = append(names, c.name)
		}
	}
	diffs := 0
	for _, n := range names {
		ca, cb := a.column(n), b.column(n)
		tc.aspect("column "+n, columnText(ca), columnText(cb))
		switch {
		case ca == nil || cb == nil:
			has, lacks, col := 0, 1, ca
			if ca == nil {
				has, lacks, col = 1, 0, cb
			}
			diffs++
			tc.add("columns", duplex.Warning, fmt.Sprintf("column %s is on %s only", n, tc.sides[has].Name),
				"its values are not synced: the other side ignores them (schema drift, counted per field)",
				fmt.Sprintf("on %s: ALTER TABLE %s ADD COLUMN %s %s", tc.sides[lacks].Name, quote(tc.t), quoteIdent(n), col.typ))
		case ca.typ != cb.typ:
			diffs++
			tc.add("columns", duplex.Warning, fmt.Sprintf("column %s is %s on %s, %s on %s", n, ca.typ, tc.sides[0].Name, cb.typ, tc.sides[1].Name),
				"a value one side accepts may not fit the other: that change lands in the dead-letter queue",
				fmt.Sprintf("on %s: ALTER TABLE %s ALTER COLUMN %s TYPE %s", tc.sides[1].Name, quote(tc.t), quoteIdent(n), ca.typ))
		case ca.notNull != cb.notNull:
			diffs++
			lax := 0
			if !cb.notNull {
				lax = 1
			}
			tc.add("columns", duplex.Warning, fmt.Sprintf("column %s is NOT NULL on %s only", n, tc.sides[1-lax].Name),
				"a NULL written on "+tc.sides[lax].Name+" is refused on the other side and lands in the dead-letter queue",
				fmt.Sprintf("on %s: ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", tc.sides[lax].Name, quote(tc.t), quoteIdent(n)))
		case ca.def != cb.def && !tc.isSequenceColumn(n):
			diffs++
			tc.add("columns", duplex.Warning, fmt.Sprintf("column %s defaults to %s on %s, %s on %s", n, orNone(ca.def), tc.sides[0].Name, orNone(cb.def), tc.sides[1].Name),
				"a row inserted without the column gets a different value depending on the side (the value is synced as written, so the sides still agree)",
				fmt.Sprintf("on %s: ALTER TABLE %s ALTER COLUMN %s %s", tc.sides[1].Name, quote(tc.t), quoteIdent(n), setDefault(ca.def)))
		}
	}
	if diffs == 0 {
		tc.add("columns", duplex.Fine, fmt.Sprintf("%d columns, same names, types, nullability and defaults", len(names)), "", "")
	}
}

func (tc *tableCheck) isSequenceColumn(name string) bool {
	for _, cat := range tc.cats {
		for _, s := range cat.sequences {
			if s.column == name {
				return true
			}
		}
	}
	return false
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

func setDefault(def string) string {
	if def == "" {
		return "DROP DEFAULT"
	}
	return "SET DEFAULT " + def
}

// key compares the primary keys; false: there is no usable key.
func (tc *tableCheck) key() bool {
	a, b := tc.cats[0], tc.cats[1]
	tc.aspect("primary key", strings.Join(a.key, ", "), strings.Join(b.key, ", "))
	ok := true
	for i, cat := range tc.cats {
		if len(cat.key) == 0 {
			ok = false
			tc.add("key", duplex.Blocker, "no primary key on "+tc.sides[i].Name,
				"the sync matches rows by primary key", fmt.Sprintf("on %s: ALTER TABLE %s ADD PRIMARY KEY (...)", tc.sides[i].Name, quote(tc.t)))
		}
	}
	if ok && !slices.Equal(a.key, b.key) {
		tc.add("key", duplex.Blocker, fmt.Sprintf("primary key (%s) on %s, (%s) on %s", strings.Join(a.key, ", "), tc.sides[0].Name, strings.Join(b.key, ", "), tc.sides[1].Name),
			"both sides must match rows by the same key", "make the primary keys the same columns")
		ok = false
	}
	if ok {
		tc.add("key", duplex.Fine, "primary key ("+strings.Join(a.key, ", ")+") on both sides", "", "")
	}
	return ok
}

// constraints compares unique and check constraints.
func (tc *tableCheck) constraints() {
	a, b := tc.cats[0], tc.cats[1]
	tc.aspect("unique", defs(a.uniques), defs(b.uniques))
	tc.aspect("checks", defs(a.checks), defs(b.checks))
	for _, u := range unionByName(a.uniques, b.uniques) {
		ua, ub := byName(a.uniques, u), byName(b.uniques, u)
		if ua == nil || ub == nil || ua.def != ub.def {
			tc.differs("unique", u, ua, ub, "a value unique on one side can be a duplicate on the other: that change lands in the dead-letter queue")
			continue
		}
		tc.add("unique", duplex.Warning, fmt.Sprintf("%s %s on both sides", u, ua.def),
			"the same value inserted on both sides under different keys collides: the second change lands in the dead-letter queue with both rows and the constraint's name, for a person to decide",
			"none needed if the application makes values unique across both sides; otherwise resolve the dead letters as they come")
	}
	for _, ch := range unionByName(a.checks, b.checks) {
		ca, cb := byName(a.checks, ch), byName(b.checks, ch)
		if ca == nil || cb == nil || ca.def != cb.def {
			tc.differs("checks", ch, ca, cb, "a row one side accepts can be refused on the other: that change lands in the dead-letter queue")
		}
	}
	if len(a.checks)+len(b.checks) > 0 && !slices.ContainsFunc(tc.report.Findings, func(f duplex.Finding) bool { return f.Check == "checks" }) {
		tc.add("checks", duplex.Fine, fmt.Sprintf("%d check constraint(s), the same on both sides", len(a.checks)), "", "")
	}
}

// differs reports a constraint that is on one side only or different.
func (tc *tableCheck) differs(check, name string, ca, cb *constraint, why string) {
	switch {
	case ca == nil:
		tc.add(check, duplex.Warning, fmt.Sprintf("%s %s is on %s only", name, cb.def, tc.sides[1].Name), why,
			fmt.Sprintf("on %s: ALTER TABLE %s ADD CONSTRAINT %s %s (or drop it on %s)", tc.sides[0].Name, quote(tc.t), quoteIdent(name), cb.def, tc.sides[1].Name))
	case cb == nil:
		tc.add(check, duplex.Warning, fmt.Sprintf("%s %s is on %s only", name, ca.def, tc.sides[0].Name), why,
			fmt.Sprintf("on %s: ALTER TABLE %s ADD CONSTRAINT %s %s (or drop it on %s)", tc.sides[1].Name, quote(tc.t), quoteIdent(name), ca.def, tc.sides[0].Name))
	default:
		tc.add(check, duplex.Warning, fmt.Sprintf("%s is %s on %s, %s on %s", name, ca.def, tc.sides[0].Name, cb.def, tc.sides[1].Name), why,
			"make the constraint the same on both sides")
	}
}

func defs(cs []constraint) string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.name
	}
	return strings.Join(out, ", ")
}

func byName(cs []constraint, name string) *constraint {
	for i := range cs {
		if cs[i].name == name {
			return &cs[i]
		}
	}
	return nil
}

func unionByName(a, b []constraint) []string {
	var out []string
	for _, c := range append(append([]constraint(nil), a...), b...) {
		if !slices.Contains(out, c.name) {
			out = append(out, c.name)
		}
	}
	slices.Sort(out)
	return out
}

func quote(t duplex.Table) string { return quoteTable(t) }
