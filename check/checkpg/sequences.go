package checkpg

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// sequences checks the key columns fed by sequences: on both sides, two
// sequences hand out the same numbers and two applications' inserts
// collide, unless the sequences are interleaved or split into disjoint
// ranges. With fix and an explicit Config.Sequences, it arranges them.
func (tc *tableCheck) sequences(ctx context.Context, fix bool, done *[]string) error {
	seqText := func(c *tableCat) string {
		out := make([]string, len(c.sequences))
		for i, s := range c.sequences {
			out[i] = fmt.Sprintf("%s: %s INCREMENT %d [%d..%d] next %d", s.column, s.name, s.increment, s.min, s.max, s.next)
		}
		return strings.Join(out, "; ")
	}
	tc.aspect("sequences", seqText(tc.cats[0]), seqText(tc.cats[1]))
	a, b := tc.cats[0], tc.cats[1]
	fed := false
	for _, col := range tc.cats[0].key {
		sa, sb := seqOf(a, col), seqOf(b, col)
		switch {
		case sa == nil && sb == nil:
			continue
		case sa == nil || sb == nil:
			fed = true
			one, other := 0, 1
			if sa == nil {
				one, other = 1, 0
			}
			tc.add("sequences", duplex.Fine, fmt.Sprintf("key column %s is fed by a sequence on %s only", col, tc.sides[one].Name),
				"the keys "+tc.sides[other].Name+"'s application writes must not come from the same numbers", "")
			continue
		}
		fed = true
		if how, ok := arranged(sa, sb); ok {
			tc.add("sequences", duplex.Fine, fmt.Sprintf("key column %s: sequences %s (%s) and %s (%s) %s", col, sa.name, tc.sides[0].Name, sb.name, tc.sides[1].Name, how),
				"the two sides never hand out the same key", "")
			continue
		}
		sa.maxKeyOtherSide, sa.otherSideHasRows = sb.maxKey, sb.hasRows
		sb.maxKeyOtherSide, sb.otherSideHasRows = sa.maxKey, sa.hasRows
		what := fmt.Sprintf("key column %s is fed by sequence %s on %s and %s on %s, which hand out the same numbers", col, sa.name, tc.sides[0].Name, sb.name, tc.sides[1].Name)
		const why = "a key inserted on one side and synced to the other is handed out again by the other side's sequence: that application's insert fails with a duplicate key, or two different rows meet under one key in the dead-letter queue"
		mode := tc.c.cfg.Sequences
		if mode == SequencesRefuse {
			ia, ib, err1 := interleave(tc.t, sa, sb)
			ra, rb, err2 := ranges(tc.t, sa, sb)
			fixes := "-sequences=interleave (A odd, B even), that is " + tc.sides[0].Name + ": " + orErr(ia, err1) + "; " + tc.sides[1].Name + ": " + orErr(ib, err1) +
				"\nor -sequences=ranges (disjoint halves), that is " + tc.sides[0].Name + ": " + orErr(ra, err2) + "; " + tc.sides[1].Name + ": " + orErr(rb, err2)
			tc.add("sequences", duplex.Blocker, what, why, fixes)
			continue
		}
		fa, fb, err := interleave(tc.t, sa, sb)
		if mode == SequencesRanges {
			fa, fb, err = ranges(tc.t, sa, sb)
		}
		if err != nil {
			tc.add("sequences", duplex.Blocker, what, why+"; -sequences="+string(mode)+" cannot fix it: "+err.Error(), "arrange the sequences by hand")
			continue
		}
		if !fix {
			tc.add("sequences", duplex.Warning, what, why,
				fmt.Sprintf("-sequences=%s will run at start: %s: %s; %s: %s", mode, tc.sides[0].Name, fa, tc.sides[1].Name, fb))
			continue
		}
		for i, sql := range []string{fa, fb} {
			s := []*sequence{sa, sb}[i]
			note := fmt.Sprintf("duplex sync %s: %s key of %s on %s, %s %s", tc.c.cfg.Sync, mode, tc.t, tc.sides[i].Name, time.Now().UTC().Format(time.RFC3339), sql)
			if s.comment != "" { // keep what was there
				note = s.comment + "\n" + note
			}
			stmt := sql + "; COMMENT ON SEQUENCE " + quote(s.name) + " IS " + literal(note)
			if _, err := tc.sides[i].Pool.Exec(ctx, stmt); err != nil {
				return pgutil.Classify(fmt.Errorf("checkpg: %s: table %s: arrange sequence %s of key column %s (%s): %w", tc.sides[i].Name, tc.t, s.name, col, sql, err))
			}
			*done = append(*done, tc.sides[i].Name+": "+sql)
			tc.c.log.InfoContext(ctx, "sequence arranged", "side", tc.sides[i].Name, "table", tc.t.String(), "column", col, "sql", sql)
		}
		tc.add("sequences", duplex.Fine, fmt.Sprintf("key column %s: sequences %s and %s arranged by -sequences=%s", col, sa.name, sb.name, mode),
			"the two sides no longer hand out the same key (recorded in the sequences' comments)", "")
	}
	if !fed {
		tc.add("sequences", duplex.Fine, "the key is not fed by a sequence", "", "")
	}
	return nil
}

func orErr(s string, err error) string {
	if err != nil {
		return "(not possible: " + err.Error() + ")"
	}
	return s
}

func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func seqOf(c *tableCat, col string) *sequence {
	for i := range c.sequences {
		if c.sequences[i].column == col {
			return &c.sequences[i]
		}
	}
	return nil
}

// arranged reports whether two sequences never hand out the same number:
// the same step k > 1 with next values in different residues mod k, or
// disjoint ranges.
func arranged(a, b *sequence) (string, bool) {
	if a.increment == b.increment && a.increment > 1 && mod(a.next-b.next, a.increment) != 0 {
		return fmt.Sprintf("are interleaved (INCREMENT BY %d, next %d and %d)", a.increment, a.next, b.next), true
	}
	if a.max < b.min || b.max < a.min {
		return fmt.Sprintf("have disjoint ranges [%d..%d] and [%d..%d]", a.min, a.max, b.min, b.max), true
	}
	return "", false
}

func mod(x, k int64) int64 { return ((x % k) + k) % k }

// alter returns the statement that sets options of s, a sequence of
// table t: ALTER SEQUENCE, or for an identity column ALTER TABLE ...
// ALTER COLUMN.
func alter(t duplex.Table, s *sequence, options ...string) string {
	if s.identity {
		for i, o := range options {
			if !strings.HasPrefix(o, "RESTART") {
				options[i] = "SET " + o
			}
		}
		return "ALTER TABLE " + quote(t) + " ALTER COLUMN " + quoteIdent(s.column) + " " + strings.Join(options, " ")
	}
	return "ALTER SEQUENCE " + quote(s.name) + " " + strings.Join(options, " ")
}

// floor is the smallest value both sequences may hand out from now on:
// past every key either side holds and every value either handed out.
func floor(a, b *sequence) int64 {
	f := max(a.next, b.next, 1)
	for _, s := range []*sequence{a, b} {
		if s.hasRows {
			f = max(f, s.maxKey+1)
		}
	}
	return f
}

// interleave returns the SQL that makes a hand out odd numbers and b even
// ones, both from past every key either side holds.
func interleave(t duplex.Table, a, b *sequence) (string, string, error) {
	if a.increment < 0 || b.increment < 0 {
		return "", "", fmt.Errorf("descending sequences")
	}
	f := floor(a, b)
	startA, startB := f, f
	if startA%2 == 0 {
		startA++
	}
	if startB%2 == 1 {
		startB++
	}
	if startA > a.max || startB > b.max {
		return "", "", fmt.Errorf("the sequences are exhausted past %d", f)
	}
	return alter(t, a, "INCREMENT BY 2", fmt.Sprintf("RESTART WITH %d", startA)), alter(t, b, "INCREMENT BY 2", fmt.Sprintf("RESTART WITH %d", startB)), nil
}

// ranges returns the SQL that gives a the lower half of the sequences'
// range and b the upper half.
func ranges(t duplex.Table, a, b *sequence) (string, string, error) {
	if a.increment < 0 || b.increment < 0 {
		return "", "", fmt.Errorf("descending sequences")
	}
	top := min(a.max, b.max)
	half := top / 2
	f := floor(a, b)
	if f > half {
		return "", "", fmt.Errorf("keys already reach %d, past half the range (%d)", f-1, half)
	}
	return alter(t, a, fmt.Sprintf("MAXVALUE %d", half), fmt.Sprintf("RESTART WITH %d", f)),
		alter(t, b, fmt.Sprintf("MINVALUE %d", half+1), fmt.Sprintf("MAXVALUE %d", top), fmt.Sprintf("START WITH %d", half+1), fmt.Sprintf("RESTART WITH %d", half+1)), nil
}
