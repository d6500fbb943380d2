package resolvetest

import (
	"encoding/json"
	"math"
	"math/big"
	"slices"
	"time"

	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
)

// Draw draws the value a user writes to a column. current is the column's
// value on the user's side (nil when the row is new).
type Draw func(t *rapid.T, current any) any

// Column is one non-key column of a Table.
type Column struct {
	Name string
	// Seed is the value the rows seeded on both sides hold.
	Seed any
	// Draw draws a value a user writes. nil: users never write the column
	// themselves (a Config.Stamp column).
	Draw Draw
}

// Table is the table both replicas of a Pair hold: an int64 key column and
// the Columns.
type Table struct {
	Table   duplex.Table
	Key     string
	Columns []Column
}

// Epoch is the start of a Pair's clock and the Seed of Items' ts column.
var Epoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Items returns the table the kit uses when a Config names none:
// public.items with key id; name and note, strings; n, an int64; f, a
// float64; tags, a []string; ts, a timestamp users write only as a stamp
// (Config.Stamp).
func Items() Table {
	return Table{
		Table: duplex.Table{Schema: "public", Name: "items"},
		Key:   "id",
		Columns: []Column{
			{Name: "name", Seed: "p", Draw: OneOf("p", "q", "r")},
			{Name: "note", Seed: "p", Draw: OneOf("p", "q", "r")},
			{Name: "n", Seed: int64(0), Draw: OneOf(int64(0), int64(1), int64(2), int64(3))},
			{Name: "f", Seed: 0.0, Draw: OneOf(0.0, 0.5, 1.5)},
			{Name: "tags", Seed: []string{"x"}, Draw: Subsets("x", "y", "z")},
			{Name: "ts", Seed: Epoch},
		},
	}
}

// With returns a copy of t in which column name is drawn by d.
func (t Table) With(name string, d Draw) Table {
	t.Columns = slices.Clone(t.Columns)
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			t.Columns[i].Draw = d
		}
	}
	return t
}

// KeyOf returns the key of row k.
func (t Table) KeyOf(k int64) duplex.Key { return duplex.Key{{Name: t.Key, Value: k}} }

// Row returns row k with the given column, value pairs; the other columns
// are NULL.
func (t Table) Row(k int64, kv ...any) duplex.Values {
	v := duplex.Values{t.Key: k}
	for _, c := range t.Columns {
		v[c.Name] = nil
	}
	for i := 0; i+1 < len(kv); i += 2 {
		v[kv[i].(string)] = kv[i+1]
	}
	return v
}

// SeedRow returns row k holding every column's Seed.
func (t Table) SeedRow(k int64) duplex.Values {
	v := duplex.Values{t.Key: k}
	for _, c := range t.Columns {
		v[c.Name] = c.Seed
	}
	return v
}

func (t Table) columnNames() []string {
	out := []string{t.Key}
	for _, c := range t.Columns {
		out = append(out, c.Name)
	}
	return out
}

// written returns the columns users write (those with a Draw).
func (t Table) written() []string {
	var out []string
	for _, c := range t.Columns {
		if c.Draw != nil {
			out = append(out, c.Name)
		}
	}
	return out
}

func (t Table) column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// OneOf draws one of vals.
func OneOf(vals ...any) Draw {
	g := rapid.SampledFrom(vals)
	return func(t *rapid.T, _ any) any { return g.Draw(t, "value") }
}

// Subsets draws a []string of distinct elements of vals.
func Subsets(vals ...string) Draw {
	g := rapid.SliceOfDistinct(rapid.SampledFrom(vals), rapid.ID[string])
	return func(t *rapid.T, _ any) any { return g.Draw(t, "value") }
}

// Int64Counter adds 1 to 3 to the current int64 (NULL counts as 0), as
// users counting on both sides do: the two sides often reach the same
// value by different increments.
func Int64Counter() Draw {
	return func(t *rapid.T, current any) any {
		n, _ := current.(int64)
		return n + int64(rapid.IntRange(1, 3).Draw(t, "step"))
	}
}

// Float64Counter is Int64Counter for a float64 column.
func Float64Counter() Draw {
	return func(t *rapid.T, current any) any {
		f, _ := current.(float64)
		return f + float64(rapid.IntRange(1, 3).Draw(t, "step"))
	}
}

// Odd draws values of any type a resolver may meet in a column: NULL,
// strings, extreme integers, NaN and infinite floats, booleans, bytes,
// lists, maps, JSON and times, zero or not.
func Odd() Draw {
	return func(t *rapid.T, _ any) any {
		vals := oddValues()
		return vals[rapid.IntRange(0, len(vals)-1).Draw(t, "odd value")]
	}
}

// oddValues returns fresh copies of the values Odd draws from.
func oddValues() []any {
	return []any{
		nil, "", "p", "\u00fc\x00", int64(0), int64(-1), int64(math.MaxInt64), int64(math.MinInt64), int32(7), uint64(math.MaxUint64),
		0.0, math.Copysign(0, -1), 1.5, math.NaN(), math.Inf(1), math.Inf(-1), true, false, []byte{}, []byte("x"),
		[]string{}, []string{"x", "x"}, []any{"x", int64(1), nil}, map[string]any{"k": "v"}, json.RawMessage(`{"k":[1]}`),
		big.NewInt(-3), time.Time{}, Epoch, Epoch.Add(time.Hour),
	}
}
