package resolve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/duplexsync/duplex"
)

// byLWW names LWW in dead letters and metrics.
const byLWW = "lww"

// LWW is last-write-wins: the newer side wins every undecided conflicting
// field of a change (Take when the source's version is newer, Keep when the
// target's is). It implements [duplex.Resolver]. Fields only the source
// changed are not its business (they take the source's value).
//
// The times compared are, with Column set, that timestamp column's value in
// the source's after image and in the target's current row (an updated_at
// column the applications maintain); without Column, the commit timestamps
// c.SourceTime and c.TargetTime (the target's only when its Applier reports
// them, see [duplex.CommitTimeField]). Times are compared as instants, so
// values in different locations (time zones) compare correctly; a
// "timestamp without time zone" column must be written in the same zone on
// both systems.
//
// When the timestamp column is the only contested field (the two sides
// changed different fields of a row, each stamping it), the later stamp
// wins however close the two are: there is nothing else to order.
//
// Otherwise nobody wins, and the change goes to the DLQ with both versions
// while the target row stays as it is, when:
//
//   - the two times are at most Skew apart ("too close to call"): clocks
//     that far apart cannot order them;
//   - a time is unknown: the column is missing or NULL on either side, or is
//     not a time.Time; without Column, the target does not report commit
//     times (TargetTime is zero);
//   - a time is more than Skew ahead of Now: a clock running ahead would
//     otherwise win every conflict until real time caught up;
//   - the target has no row ([duplex.UpdateDelete]): when it was deleted is
//     unknown, so the update cannot be ordered against the deletion.
//
// A deletion ([duplex.DeleteUpdate]) has no after image: its time is its
// commit time (c.SourceTime), compared with the target's column or commit
// time. When it is newer the row is deleted; when the target's update is
// newer the target keeps the row, and the other direction, seeing that
// update against the deleted row, dead-letters it for an operator to replay.
//
// The times are the rows' times, while conflicts are per field: see Known
// limitations in the package documentation.
//
// Use [NewLWW] to build a checked one, or a literal and [LWW.Validate]; a
// literal with a negative Skew fails every conflict with a permanent error
// (the change is dead-lettered). An LWW must not be modified while in use;
// it is safe for concurrent use.
type LWW struct {
	// Column names the timestamp column to compare; "" compares commit
	// timestamps.
	Column string
	// Skew is the clock-skew tolerance: times at most this far apart are too
	// close to call. Must not be negative. 0: only equal times are a tie.
	Skew time.Duration
	// Now is the clock for the "ahead of now" check. nil: time.Now.
	Now func() time.Time
}

var _ duplex.Resolver = (*LWW)(nil)

// NewLWW returns an LWW comparing column ("" for commit timestamps) with the
// clock-skew tolerance skew. A negative skew is an error.
func NewLWW(column string, skew time.Duration) (*LWW, error) {
	l := &LWW{Column: column, Skew: skew}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return l, nil
}

// Validate reports a configuration problem: a negative Skew.
func (l *LWW) Validate() error {
	if l.Skew < 0 {
		return fmt.Errorf("resolve: LWW Skew must not be negative (got %s)", l.Skew)
	}
	return nil
}

// timestampTypes are the SQL type names ValidateColumn accepts.
var timestampTypes = []string{
	"timestamp", "timestamptz", "timestamp with time zone", "timestamp without time zone",
	"datetime", "datetime2", "datetimeoffset",
}

// ValidateColumn checks that Column exists in every table of schema (table
// -> column -> SQL type name) and is a timestamp, and returns every problem
// joined, each naming the table and column. Precision suffixes such as
// "timestamp(3) with time zone" are accepted. Without Column there is
// nothing to check. To compare commit timestamps on the tables that lack
// Column instead, see [LWW.TablesWithoutColumn].
func (l *LWW) ValidateColumn(schema map[duplex.Table]map[string]string) error {
	_, errs := l.checkColumn(schema, true)
	return errors.Join(errs...)
}

// TablesWithoutColumn is [LWW.ValidateColumn] for a policy that compares
// Column where a table has it and commit timestamps where it does not
// (an LWW without Column, dispatched per table with [ByTable]): it returns
// the tables of schema lacking Column, sorted by name, and every table
// whose Column is not a timestamp as an error, joined, each naming the
// table and column. Without Column every table is returned.
func (l *LWW) TablesWithoutColumn(schema map[duplex.Table]map[string]string) ([]duplex.Table, error) {
	missing, errs := l.checkColumn(schema, false)
	return missing, errors.Join(errs...)
}

// checkColumn returns, in table order, the tables of schema without
// Column and the problems found: a Column that is not a timestamp, and,
// with requireColumn, a missing one.
func (l *LWW) checkColumn(schema map[duplex.Table]map[string]string, requireColumn bool) (missing []duplex.Table, errs []error) {
	tables := make([]duplex.Table, 0, len(schema))
	for t := range schema {
		tables = append(tables, t)
	}
	slices.SortFunc(tables, func(a, b duplex.Table) int { return strings.Compare(a.String(), b.String()) })
	if l.Column == "" {
		if requireColumn {
			return nil, nil
		}
		return tables, nil
	}
	for _, t := range tables {
		typ, ok := schema[t][l.Column]
		if !ok {
			if requireColumn {
				errs = append(errs, fmt.Errorf("resolve: LWW column %q: table %s has no such column", l.Column, t))
			}
			missing = append(missing, t)
			continue
		}
		if !isTimestampType(typ) {
			errs = append(errs, fmt.Errorf("resolve: LWW column %q: %s.%s is %s, not a timestamp", l.Column, t, l.Column, typ))
		}
	}
	return missing, errs
}

func isTimestampType(typ string) bool {
	t := strings.ToLower(typ)
	if i := strings.IndexByte(t, '('); i >= 0 { // timestamp(3) with time zone
		if j := strings.IndexByte(t[i:], ')'); j >= 0 {
			t = t[:i] + " " + t[i+j+1:]
		}
	}
	return slices.Contains(timestampTypes, strings.Join(strings.Fields(t), " "))
}

// Resolve implements [duplex.Resolver]; see [LWW] for the rules.
func (l *LWW) Resolve(_ context.Context, c *duplex.Conflict) error {
	fields := undecidedConflicting(c)
	if len(fields) == 0 {
		return nil
	}
	if err := l.Validate(); err != nil {
		return duplex.Permanent(err)
	}
	src, dst, why := l.times(c)
	if why != "" {
		c.DeadLetter("last-write-wins: "+why, byLWW)
		return nil
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	limit := now().Add(l.Skew)
	for _, side := range []struct {
		name string
		at   time.Time
	}{{c.Direction.From, src}, {c.Direction.To, dst}} {
		if side.at.After(limit) {
			c.DeadLetter(fmt.Sprintf("last-write-wins: %s's time %s is ahead of now (%s) by more than the skew tolerance %s",
				side.name, stamp(side.at), stamp(limit.Add(-l.Skew)), l.Skew), byLWW)
			return nil
		}
	}
	d := src.Sub(dst)
	if len(fields) == 1 && fields[0] == l.Column && c.Change.Op != duplex.OpDelete {
		// Only the timestamp column itself is contested (the two sides
		// changed different fields, each stamping the row): it records when
		// the row last changed, so the later stamp is right on both sides,
		// however close the two are.
		decideConflicting(c, d > 0, byLWW)
		return nil
	}
	if d.Abs() <= l.Skew {
		c.DeadLetter(fmt.Sprintf("too close to call: %s at %s, %s at %s, %s apart, within the skew tolerance %s",
			c.Direction.From, stamp(src), c.Direction.To, stamp(dst), d.Abs(), l.Skew), byLWW)
		return nil
	}
	decideConflicting(c, d > 0, byLWW)
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// times returns the source's and the target's time, or why they cannot be
// compared.
func (l *LWW) times(c *duplex.Conflict) (src, dst time.Time, why string) {
	from, to := c.Direction.From, c.Direction.To
	if c.Current == nil {
		return src, dst, fmt.Sprintf("%s has no row: when it was deleted is unknown, so %s's %s cannot be ordered against it",
			to, from, c.Change.Op)
	}
	if l.Column == "" {
		switch {
		case c.SourceTime.IsZero():
			return src, dst, fmt.Sprintf("commit times are unknown: %s's change has no commit time", from)
		case c.TargetTime.IsZero():
			return src, dst, fmt.Sprintf("commit times are unknown: %s does not report its rows' commit times (see duplex.CommitTimeField)", to)
		}
		return c.SourceTime, c.TargetTime, ""
	}
	if c.Change.Op == duplex.OpDelete {
		if c.SourceTime.IsZero() {
			return src, dst, fmt.Sprintf("%s's delete has no commit time", from)
		}
		src = c.SourceTime
	} else if src, why = columnTime(c.Change.After, l.Column, from); why != "" {
		return src, dst, why
	}
	dst, why = columnTime(c.Current, l.Column, to)
	return src, dst, why
}

func columnTime(row duplex.Values, column, side string) (time.Time, string) {
	v, ok := row[column]
	switch t := v.(type) {
	case time.Time:
		return t, ""
	case nil:
		if !ok {
			return time.Time{}, fmt.Sprintf("%s's row has no column %q", side, column)
		}
		return time.Time{}, fmt.Sprintf("%s's %s is NULL", side, column)
	default:
		return time.Time{}, fmt.Sprintf("%s's %s is a %T, not a time", side, column, v)
	}
}
