package resolve

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/duplexsync/duplex"
)

// Both is the owner that marks a field as shared: both systems may change
// it, and Authority leaves its conflicts to the next resolver of the chain.
const Both = "both"

// byAuthority names Authority in dead letters and metrics.
const byAuthority = "authority"

// Authority decides fields by ownership: each rule names the system that
// owns a field (its authority), and a change to an owned field wins when it
// comes from the owner and is not propagated when it comes from the other
// system. It implements [duplex.Resolver]; build one with [ParseAuthority] or
// [NewAuthority].
//
// For each undecided field at stake, with owner the field's rule:
//
//   - owner == c.Direction.From (the source owns it): Take.
//   - owner == c.Direction.To (the target owns it): Keep. The non-owner's
//     change is not propagated, and a conflict on the field is won by the
//     owner. In a two-way Sync the merge writes the owner's value back over
//     a non-owner's write, so both sides hold the owner's value; a one-way
//     Pipeline leaves the non-owner's write on its side.
//   - owner is [Both], names neither system of the sync, or there is no
//     rule: the field is left undecided for the next resolver (a field only
//     the source changed then takes the source's value).
//
// A row the source inserts and the target does not have yet is created
// whole: there is no target value to keep, so Authority decides nothing and
// every field takes the source's value.
//
// Row deletions (kinds [duplex.DeleteUpdate]: the source deleted a row the
// target changed, and [duplex.UpdateDelete]: the source updated a row the
// target does not have) are decided for the whole row, over every contested
// field, the same way from either direction:
//
//   - If the updating side owns at least one contested field, the row
//     survives: an owner's edit is never lost to a deletion by a side that
//     does not own it. DeleteUpdate keeps the target's row; UpdateDelete
//     takes the source's row (the Pipeline recreates it).
//   - Else, if the deleting side owns every contested field, the deletion
//     wins: DeleteUpdate deletes the target's row; UpdateDelete keeps the
//     target without the row.
//   - Else (some contested field is shared or unowned) the row is left
//     undecided for the next resolver.
//
// An Authority is immutable and safe for concurrent use.
type Authority struct {
	rules []rule
	index map[ruleKey]int
}

// rule is one "target=owner" rule.
type rule struct {
	text  string       // the rule as written, for errors
	table duplex.Table // zero: every table
	field string
	owner string
}

type ruleKey struct {
	table duplex.Table
	field string
}

var _ duplex.Resolver = (*Authority)(nil)

// ParseAuthority parses a comma-separated list of rules "target=owner", such
// as
//
//	customers.name=crm,customers.email=crm,payment_status=billing,last_activity=both
//
// A target is schema.table.field, table.field (the schema defaults to
// "public", as in [duplex.ParseTable]) or a bare field name, which applies to
// that field in every table. A rule for a table beats a rule for the bare
// field. The owner is a system name (a [duplex.Direction] name) or [Both].
// Spaces around items are ignored; empty items are skipped. The error names
// every bad rule. Check the rules against the systems and tables of the sync
// with [Authority.Validate].
func ParseAuthority(spec string) (*Authority, error) {
	var items [][2]string
	var errs []error
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		target, owner, ok := strings.Cut(item, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("resolve: authority rule %q: want target=owner", item))
			continue
		}
		items = append(items, [2]string{strings.TrimSpace(target), strings.TrimSpace(owner)})
	}
	a, err := newAuthority(items)
	if err := errors.Join(append(errs, err)...); err != nil {
		return nil, err
	}
	return a, nil
}

// NewAuthority builds an Authority from rules mapping targets to owners, as
// in [ParseAuthority]: {"customers.name": "crm", "payment_status": "billing"}.
func NewAuthority(rules map[string]string) (*Authority, error) {
	items := make([][2]string, 0, len(rules))
	for _, target := range slices.Sorted(maps.Keys(rules)) {
		items = append(items, [2]string{strings.TrimSpace(target), strings.TrimSpace(rules[target])})
	}
	return newAuthority(items)
}

func newAuthority(items [][2]string) (*Authority, error) {
	a := &Authority{index: make(map[ruleKey]int, len(items))}
	var errs []error
	for _, it := range items {
		text := it[0] + "=" + it[1]
		r, err := parseRule(text, it[0], it[1])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		k := ruleKey{r.table, r.field}
		if i, dup := a.index[k]; dup {
			errs = append(errs, fmt.Errorf("resolve: authority rule %q: %s already has a rule (%q)", text, r.target(), a.rules[i].text))
			continue
		}
		a.index[k] = len(a.rules)
		a.rules = append(a.rules, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

func parseRule(text, target, owner string) (rule, error) {
	bad := func(why string) (rule, error) {
		return rule{}, fmt.Errorf("resolve: authority rule %q: %s", text, why)
	}
	if owner == "" {
		return bad("no owner (want a system name or \"both\")")
	}
	if strings.ContainsAny(owner, " \t.=") {
		return bad(fmt.Sprintf("invalid owner %q", owner))
	}
	parts := strings.Split(target, ".")
	if slices.Contains(parts, "") || slices.ContainsFunc(parts, func(p string) bool { return strings.ContainsAny(p, " \t") }) {
		return bad(fmt.Sprintf("invalid target %q (want field, table.field or schema.table.field)", target))
	}
	r := rule{text: text, owner: owner}
	switch len(parts) {
	case 1:
		r.field = parts[0]
	case 2:
		r.table, r.field = duplex.Table{Schema: "public", Name: parts[0]}, parts[1]
	case 3:
		r.table, r.field = duplex.Table{Schema: parts[0], Name: parts[1]}, parts[2]
	default:
		return bad(fmt.Sprintf("invalid target %q (want field, table.field or schema.table.field)", target))
	}
	return r, nil
}

// target renders the rule's target: "public.customers.name" or "field name".
func (r *rule) target() string {
	if r.table == (duplex.Table{}) {
		return fmt.Sprintf("field %s of every table", r.field)
	}
	return r.table.String() + "." + r.field
}

// Owner returns the owner of field in table t: a system name, [Both], or ""
// when no rule covers it. A rule naming the table beats a bare-field rule.
func (a *Authority) Owner(t duplex.Table, field string) string {
	if i, ok := a.index[ruleKey{t, field}]; ok {
		return a.rules[i].owner
	}
	if i, ok := a.index[ruleKey{field: field}]; ok {
		return a.rules[i].owner
	}
	return ""
}

// String returns the rules in the form ParseAuthority reads, in their order.
func (a *Authority) String() string {
	parts := make([]string, len(a.rules))
	for i := range a.rules {
		parts[i] = a.rules[i].text
	}
	return strings.Join(parts, ",")
}

// Validate checks the rules against the sync's system names and its tables'
// columns, and returns every problem joined, each naming the rule:
//
//	resolve: authority rule "customers.emial=crm": table public.customers has no column "emial"
//
// An owner must be one of systems or [Both]; a table rule must name a table
// of schema and one of its columns; a bare-field rule must name a column of
// at least one table. A nil systems or schema skips that check.
func (a *Authority) Validate(systems []string, schema map[duplex.Table][]string) error {
	var errs []error
	for i := range a.rules {
		r := &a.rules[i]
		if systems != nil && r.owner != Both && !slices.Contains(systems, r.owner) {
			errs = append(errs, fmt.Errorf("resolve: authority rule %q: unknown system %q (want one of %s or %q)",
				r.text, r.owner, strings.Join(systems, ", "), Both))
		}
		if schema == nil {
			continue
		}
		if r.table == (duplex.Table{}) {
			found := false
			for _, cols := range schema {
				if slices.Contains(cols, r.field) {
					found = true
					break
				}
			}
			if !found {
				errs = append(errs, fmt.Errorf("resolve: authority rule %q: no table has a column %q", r.text, r.field))
			}
			continue
		}
		cols, ok := schema[r.table]
		if !ok {
			errs = append(errs, fmt.Errorf("resolve: authority rule %q: no table %s", r.text, r.table))
			continue
		}
		if !slices.Contains(cols, r.field) {
			errs = append(errs, fmt.Errorf("resolve: authority rule %q: table %s has no column %q", r.text, r.table, r.field))
		}
	}
	return errors.Join(errs...)
}

// Resolve implements [duplex.Resolver]; see [Authority] for the rules.
func (a *Authority) Resolve(_ context.Context, c *duplex.Conflict) error {
	switch c.Kind {
	case duplex.DeleteUpdate:
		a.resolveRow(c, c.Direction.From, c.Direction.To)
		return nil
	case duplex.UpdateDelete:
		a.resolveRow(c, c.Direction.To, c.Direction.From)
		return nil
	}
	if c.Current == nil || c.Change.After == nil {
		return nil // a new row is created whole; a delete without conflict has nothing to decide
	}
	t := c.Table()
	for _, f := range c.Undecided() {
		switch a.Owner(t, f) {
		case c.Direction.From:
			c.Take(f, byAuthority)
		case c.Direction.To:
			c.Keep(f, byAuthority)
		}
	}
	// A two-way merge offers the target's own edits too: one of a field
	// the source's system owns is undone, so a non-owner's edit never
	// spreads, whichever direction merges the row first.
	for _, f := range c.TargetOnly() {
		if a.Owner(t, f) == c.Direction.From {
			c.Take(f, byAuthority)
		}
	}
	return nil
}

// resolveRow decides whether a row one side deleted and the other updated
// survives; see Authority.
func (a *Authority) resolveRow(c *duplex.Conflict, deleter, updater string) {
	t := c.Table()
	fields := c.Fields()
	if len(fields) == 0 {
		return
	}
	updaterOwns, deleterOwnsAll := false, true
	for _, f := range fields {
		switch a.Owner(t, f) {
		case updater:
			updaterOwns = true
		case deleter:
		default:
			deleterOwnsAll = false
		}
	}
	var survive bool
	switch {
	case updaterOwns:
		survive = true
	case deleterOwnsAll:
		survive = false
	default:
		return
	}
	// The source's version wins when it is the survivor's (UpdateDelete) or
	// the deletion (DeleteUpdate).
	takeSource := survive == (updater == c.Direction.From)
	decideAll(c, takeSource, byAuthority)
}

// decideAll decides every undecided field: the source's value or the target's.
func decideAll(c *duplex.Conflict, takeSource bool, by string) {
	for _, f := range c.Undecided() {
		if takeSource {
			c.Take(f, by)
		} else {
			c.Keep(f, by)
		}
	}
}

// decideConflicting decides every undecided conflicting field.
func decideConflicting(c *duplex.Conflict, takeSource bool, by string) {
	for _, f := range undecidedConflicting(c) {
		if takeSource {
			c.Take(f, by)
		} else {
			c.Keep(f, by)
		}
	}
}

// undecidedConflicting returns the conflicting fields no resolver decided yet.
func undecidedConflicting(c *duplex.Conflict) []string {
	var out []string
	for _, f := range c.Conflicting() {
		if p, _ := c.Decision(f); p == duplex.Undecided {
			out = append(out, f)
		}
	}
	return out
}
