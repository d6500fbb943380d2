package resolve

import (
	"context"
	"fmt"
	"math/big"
	"slices"

	"github.com/duplexsync/duplex"
)

// Names of the merge helpers in dead letters and metrics.
const (
	byCounterDelta = "counter_delta"
	byUnionTags    = "union_tags"
)

// CounterDelta merges numeric counters that both sides changed by adding
// both changes to the value they last agreed on: target + (source - base),
// computed as (source + target) - base so that both directions get the
// identical result, float64 included. NULL counts as zero. It decides the
// named fields of update-update conflicts, and the named fields the
// Pipeline offers as converged (both sides changed the counter to the same
// value, by different increments that both count), when their values are
// all integers (any width; the result is an int64) or all float64.
// Anything else (mixed types, an int64 overflow, no before image,
// insert-insert, deletes) is left to the next resolver; use CounterDelta
// only on fields that always hold numbers, since a field decided sometimes
// by CounterDelta and sometimes by another resolver does not converge.
//
// It is an example of a custom resolver written with [duplex.ResolverFunc].
func CounterDelta(fields ...string) duplex.ResolverFunc {
	return func(_ context.Context, c *duplex.Conflict) error {
		for _, f := range fields {
			base, okB := c.BaseValue(f)
			src, okS := c.SourceValue(f)
			cur, okT := c.TargetValue(f)
			converged := slices.Contains(c.Converged(), f)
			if !(c.Kind == duplex.UpdateUpdate && c.IsConflicting(f)) && !converged || !okB || !okS || !okT {
				continue
			}
			if c.BaseUncertain {
				c.DeadLetter(fmt.Sprintf("counter %s changed on both sides after an interrupted merge of the row: adding the deltas could count one twice; decide by hand", f), byCounterDelta)
				return nil
			}
			if v, ok := sumMinus(src, cur, base); ok {
				c.Set(f, v, byCounterDelta)
			}
		}
		return nil
	}
}

// sumMinus returns (a + b) - base for integers or float64s; nil is zero.
func sumMinus(a, b, base any) (any, bool) {
	vals := [3]any{a, b, base}
	ints, floats := 0, 0
	for _, v := range vals {
		switch v.(type) {
		case nil:
		case float64:
			floats++
		default:
			if _, ok := toBigInt(v); !ok {
				return nil, false
			}
			ints++
		}
	}
	switch {
	case floats == 0:
		var n [3]*big.Int
		for i, v := range vals {
			n[i] = big.NewInt(0)
			if v != nil {
				n[i], _ = toBigInt(v)
			}
		}
		if r := n[0].Add(n[0], n[1]).Sub(n[0], n[2]); r.IsInt64() {
			return r.Int64(), true
		}
	case ints == 0:
		var x [3]float64
		for i, v := range vals {
			x[i], _ = v.(float64)
		}
		return (x[0] + x[1]) - x[2], true
	}
	return nil, false
}

func toBigInt(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case int64:
		return big.NewInt(x), true
	case int:
		return big.NewInt(int64(x)), true
	case int32:
		return big.NewInt(int64(x)), true
	case int16:
		return big.NewInt(int64(x)), true
	case int8:
		return big.NewInt(int64(x)), true
	case uint64:
		return new(big.Int).SetUint64(x), true
	case uint32:
		return big.NewInt(int64(x)), true
	case uint16:
		return big.NewInt(int64(x)), true
	case uint8:
		return big.NewInt(int64(x)), true
	}
	return nil, false
}

// UnionTags merges string-array fields (tags, labels) that both sides
// changed, element by element against the value they last agreed on (the
// source's before image): the result holds every element both versions
// hold, plus every element either side added; an element either side
// removed is gone. Without a base (insert-insert, sources without before
// images) that is the union of both versions. The result is sorted and
// without duplicates, so both directions get the same set whatever the
// order. NULL counts as empty. Values must be []string or []any holding
// strings; the result has the target's representation ([]any if the
// target's value is one, else []string). Other values, and deletes, are
// left to the next resolver.
//
// It is an example of a custom resolver written with [duplex.ResolverFunc].
func UnionTags(fields ...string) duplex.ResolverFunc {
	return func(_ context.Context, c *duplex.Conflict) error {
		if c.Current == nil || c.Change.After == nil {
			return nil
		}
		for _, f := range fields {
			src, _ := c.SourceValue(f)
			cur, _ := c.TargetValue(f)
			base, _ := c.BaseValue(f)
			x, okX := stringSlice(src)
			y, okY := stringSlice(cur)
			b, okB := stringSlice(base)
			if !c.IsConflicting(f) || !okX || !okY || !okB {
				continue
			}
			var u []string
			for _, e := range append(slices.Clone(x), y...) {
				if slices.Contains(x, e) && slices.Contains(y, e) || !slices.Contains(b, e) {
					u = append(u, e)
				}
			}
			slices.Sort(u)
			c.Set(f, like(append([]string{}, slices.Compact(u)...), cur, src), byUnionTags)
		}
		return nil
	}
}

// stringSlice reads a []string or a []any of strings; nil is empty.
func stringSlice(v any) ([]string, bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case []string:
		return x, true
	case []any:
		out := make([]string, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out[i] = s
		}
		return out, true
	}
	return nil, false
}

// like returns s as []any when the target's value (or, for a NULL target,
// the source's) is a []any.
func like(s []string, target, source any) any {
	ref := target
	if ref == nil {
		ref = source
	}
	if _, ok := ref.([]any); ok {
		out := make([]any, len(s))
		for i, e := range s {
			out[i] = e
		}
		return out
	}
	return s
}
