package resolvetest

import (
	"time"

	"github.com/duplexsync/duplex"
)

// oddConflicts returns conflicts of every kind and op whose change and
// current row are missing, empty, key-only, or full of odd values (with a
// column the table does not have), at zero and odd times, from both
// directions.
func oddConflicts(cfg Config) []*duplex.Conflict {
	tab := cfg.Table
	odd := func(shift int) duplex.Values {
		vals := oddValues()
		row := duplex.Values{tab.Key: vals[shift%len(vals)], "resolvetest_extra": vals[(shift+1)%len(vals)]}
		for i, c := range tab.Columns {
			row[c.Name] = vals[(shift+i+2)%len(vals)]
		}
		return row
	}
	type shape struct {
		key                    duplex.Key
		before, after, current duplex.Values
	}
	shapes := []shape{
		{},
		{key: duplex.Key{}, before: duplex.Values{}, after: duplex.Values{}, current: duplex.Values{}},
		{key: tab.KeyOf(1), before: tab.Row(1), after: duplex.Values{tab.Key: int64(1)}, current: duplex.Values{tab.Key: int64(1)}},
		{key: duplex.Key{{Name: tab.Key, Value: nil}}, before: odd(0), after: odd(5), current: odd(11)},
		{key: tab.KeyOf(-1), before: nil, after: odd(3), current: odd(7)},
	}
	var out []*duplex.Conflict
	for i, s := range shapes {
		for kind := duplex.NoConflict; kind <= duplex.DeleteUpdate; kind++ {
			for _, op := range []duplex.Op{duplex.OpInsert, duplex.OpUpdate, duplex.OpDelete} {
				dir := duplex.Direction{From: cfg.Sides[0], To: cfg.Sides[1]}
				if (i+int(kind)+int(op))%2 == 1 {
					dir = duplex.Direction{From: cfg.Sides[1], To: cfg.Sides[0]}
				}
				at := time.Time{}
				if op == duplex.OpUpdate {
					at = Epoch
				}
				out = append(out, &duplex.Conflict{
					Direction: dir, Kind: kind,
					Change: &duplex.Change{
						Table: tab.Table, Op: op, Key: s.key, Before: s.before.Clone(), After: s.after.Clone(), CommitTime: at,
					},
					Current: s.current.Clone(), SourceTime: at, TargetTime: at.Add(-time.Hour), BaseUncertain: i%2 == 0,
				})
			}
		}
	}
	return out
}
