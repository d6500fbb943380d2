package resolve_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

func TestCounterDeltaMergesBothChanges(t *testing.T) {
	t.Parallel()
	counters := func() duplex.Resolver { return resolve.CounterDelta("n", "f") }
	t.Run("integers", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, counters, func(p *pair) {
			p.Seed(row(1, "n", int64(10)))
			p.Update("a", 1, duplex.Values{"n": int64(13)}) // +3
			p.Update("b", 1, duplex.Values{"n": int64(15)}) // +5
		})
		require.Empty(t, out.Dead)
		require.Equal(t, int64(18), out.A["id=1"]["n"])
		require.Equal(t, []any{int64(18), int64(18)}, []any{out.Calls[0].Values["n"], out.Calls[1].Values["n"]})
	})
	t.Run("several changes on one side", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, counters, func(p *pair) {
			p.Seed(row(1, "n", int64(10)))
			p.Update("a", 1, duplex.Values{"n": int64(13)}) // +3
			p.Update("a", 1, duplex.Values{"n": int64(15)}) // +2
			p.Update("b", 1, duplex.Values{"n": int64(16)}) // +6
		})
		require.Empty(t, out.Dead)
		require.Equal(t, int64(21), out.A["id=1"]["n"])
	})
	t.Run("float64 is exact from both directions", func(t *testing.T) {
		t.Parallel()
		// b + (a - base) and a + (b - base) differ in float64; (a + b) - base is the same both ways.
		base, a, b := 0.1, 0.2, 0.7
		require.NotEqual(t, b+(a-base), a+(b-base))
		out, _ := bothWays(t, counters, func(p *pair) {
			p.Seed(row(1, "f", base))
			p.Update("a", 1, duplex.Values{"f": a})
			p.Update("b", 1, duplex.Values{"f": b})
		})
		require.Empty(t, out.Dead)
		require.Equal(t, (a+b)-base, out.A["id=1"]["f"])
	})
	t.Run("NULL is zero", func(t *testing.T) {
		t.Parallel()
		for name, vals := range map[string][4]any{
			"NULL base":   {nil, int64(1), int64(2), int64(3)},
			"NULL target": {int64(0), int64(1), nil, int64(1)},
			"floats":      {nil, 1.5, 2.0, 3.5},
		} {
			out, _ := bothWays(t, counters, func(p *pair) {
				field := "n"
				if _, ok := vals[1].(float64); ok {
					field = "f"
				}
				p.Seed(row(1, field, vals[0]))
				p.Update("a", 1, duplex.Values{field: vals[1]})
				p.Update("b", 1, duplex.Values{field: vals[2]})
			})
			require.Empty(t, out.Dead, name)
			got := out.A["id=1"]["n"]
			if _, ok := vals[1].(float64); ok {
				got = out.A["id=1"]["f"]
			}
			require.Equal(t, vals[3], got, name)
		}
	})
	t.Run("not mergeable: left to the next resolver", func(t *testing.T) {
		t.Parallel()
		for name, vals := range map[string][3]any{
			"mixed types": {int64(0), int64(1), 2.5},
			"overflow":    {int64(0), int64(math.MaxInt64), int64(1)},
			"not numbers": {"0", "1", "2"},
		} {
			p := newPair(t, resolve.CounterDelta("n"))
			p.Seed(row(1, "n", vals[0]))
			p.Update("a", 1, duplex.Values{"n": vals[1]})
			p.Update("b", 1, duplex.Values{"n": vals[2]})
			p.Quiesce("a")
			require.Len(t, p.DeadLetters(), 2, name)
			require.Equal(t, "default", p.DeadLetters()[0].Conflict.DecidedBy, name)
		}
	})
	t.Run("a side reaching the other's value by another route", func(t *testing.T) {
		t.Parallel()
		// b's change 10 -> 15 reaches a, which went 10 -> 13 -> 15: the
		// Pipeline offers n as converged (both sides changed it to 15), and
		// both increments still add up.
		out, _ := bothWays(t, counters, func(p *pair) {
			p.Seed(row(1, "n", int64(10)))
			p.Update("a", 1, duplex.Values{"n": int64(13)}) // +3
			p.Update("a", 1, duplex.Values{"n": int64(15)}) // +2
			p.Update("b", 1, duplex.Values{"n": int64(15)}) // +5
		})
		require.Empty(t, out.Dead)
		require.Equal(t, int64(20), out.A["id=1"]["n"])
	})
	t.Run("the same increment on both sides counts twice", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, counters, func(p *pair) {
			p.Seed(row(1, "n", int64(10)))
			p.Update("a", 1, duplex.Values{"n": int64(13)})
			p.Update("b", 1, duplex.Values{"n": int64(13)})
		})
		require.Equal(t, int64(16), out.A["id=1"]["n"])
	})
	t.Run("insert-insert has no base: left to the next resolver", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, func() duplex.Resolver { return duplex.Chain(resolve.CounterDelta("n"), resolve.SideWins("b")) }, func(p *pair) {
			p.Insert("a", row(1, "n", int64(2)))
			p.Insert("b", row(1, "n", int64(3)))
		})
		require.Equal(t, int64(3), out.A["id=1"]["n"])
		require.Equal(t, duplex.KeepTarget, out.Calls[0].Picks["n"])
	})
	t.Run("only named fields", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, func() duplex.Resolver { return duplex.Chain(resolve.CounterDelta("n"), resolve.SideWins("a")) }, func(p *pair) {
			p.Seed(row(1, "n", int64(1), "f", 1.0))
			p.Update("a", 1, duplex.Values{"n": int64(2), "f": 2.0})
			p.Update("b", 1, duplex.Values{"n": int64(3), "f": 3.0})
		})
		require.Equal(t, row(1, "n", int64(4), "f", 2.0), out.B["id=1"])
	})
}

func TestUnionTags(t *testing.T) {
	t.Parallel()
	tags := func() duplex.Resolver { return resolve.UnionTags("tags") }
	t.Run("[]string", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, tags, func(p *pair) {
			p.Seed(row(1, "tags", []string{"x"}))
			p.Update("a", 1, duplex.Values{"tags": []string{"x", "a", "a"}})
			p.Update("b", 1, duplex.Values{"tags": []string{"b", "x"}})
		})
		require.Empty(t, out.Dead)
		require.Equal(t, []string{"a", "b", "x"}, out.A["id=1"]["tags"])
		require.Equal(t, []string{"a", "b", "x"}, out.B["id=1"]["tags"])
	})
	t.Run("[]any keeps its representation", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, tags, func(p *pair) {
			p.Seed(row(1, "tags", []any{"x"}))
			p.Update("a", 1, duplex.Values{"tags": []any{"z"}})
			p.Update("b", 1, duplex.Values{"tags": []any{"y", "x"}})
		})
		require.Equal(t, []any{"y", "z"}, out.A["id=1"]["tags"], "a removed x")
	})
	t.Run("a removal made after the other side's change is kept", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, tags, func(p *pair) {
			p.Seed(row(1, "tags", nil))
			p.Update("b", 1, duplex.Values{"tags": []string{"t5"}})
			p.Update("b", 1, duplex.Values{"tags": []string{"t6"}}) // b drops t5
			p.Update("a", 1, duplex.Values{"tags": []string{"t8"}})
		})
		require.Equal(t, []string{"t6", "t8"}, out.A["id=1"]["tags"])
	})
	t.Run("NULL is empty", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, tags, func(p *pair) {
			p.Seed(row(1, "tags", []string{"x"}))
			p.Update("a", 1, duplex.Values{"tags": []string{"a"}})
			p.Update("b", 1, duplex.Values{"tags": nil})
		})
		require.Equal(t, []string{"a"}, out.B["id=1"]["tags"])
	})
	t.Run("insert-insert", func(t *testing.T) {
		t.Parallel()
		out, _ := bothWays(t, tags, func(p *pair) {
			p.Insert("a", row(1, "tags", []string{"a"}))
			p.Insert("b", row(1, "tags", []string{"b"}))
		})
		require.Equal(t, []string{"a", "b"}, out.B["id=1"]["tags"])
	})
	t.Run("not strings: left to the next resolver", func(t *testing.T) {
		t.Parallel()
		p := newPair(t, resolve.UnionTags("tags"))
		p.Seed(row(1, "tags", []any{"x"}))
		p.Update("a", 1, duplex.Values{"tags": []any{"x", int64(1)}})
		p.Update("b", 1, duplex.Values{"tags": []any{"y"}})
		p.Quiesce("a")
		require.Len(t, p.DeadLetters(), 2)
	})
}
