package resolve

import (
	"context"
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
// identical result, float64 included. It decides the named fields of update-
// update conflicts whose base, source and target values are all integers
// (any width; the result is an int64, and a result that does not fit is
// left undecided) or all float64; anything else (NULL, mixed types, no
// before image, insert-insert, deletes) is left to the next resolver.
//
// It is an example of a custom resolver written with [duplex.ResolverFunc].
// Note that conflict detection compares values: if one side's change
// happens to leave the counter at the value the other side's change
// produced, the Pipeline sees nothing to merge and one of the two deltas is
// lost (see the package documentation).
func CounterDelta(fields ...string) duplex.ResolverFunc {
	return func(_ context.Context, c *duplex.Conflict) error {
		for _, f := range fields {
			base, okB := c.BaseValue(f)
			src, okS := c.SourceValue(f)
			cur, okT := c.TargetValue(f)
			if c.Kind != duplex.UpdateUpdate || !c.IsConflicting(f) || !okB || !okS || !okT {
				continue
			}
			if v, ok := sumMinus(src, cur, base); ok {
				c.Set(f, v, byCounterDelta)
			}
		}
		return nil
	}
}

// sumMinus returns (a + b) - base for three integers or three float64s.
func sumMinus(a, b, base any) (any, bool) {
	x, okX := toBigInt(a)
	y, okY := toBigInt(b)
	z, okZ := toBigInt(base)
	if okX && okY && okZ {
		r := x.Add(x, y)
		if r = r.Sub(r, z); r.IsInt64() {
			return r.Int64(), true
		}
		return nil, false
	}
	fa, okA := a.(float64)
	fb, okB := b.(float64)
	fz, okZf := base.(float64)
	if okA && okB && okZf {
		return (fa + fb) - fz, true
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
// changed into the union of both versions, sorted and without duplicates,
// so that both directions get the same set whatever the order. NULL counts
// as empty. Values must be []string or []any holding strings; the result
// has the target's representation ([]any if the target's value is one,
// else []string). Other values, and deletes, are left to the next resolver.
//
// A union never loses an element either side added, at the price of an
// element one side removed while the other side changed the same field:
// it comes back. It is an example of a custom resolver written with
// [duplex.ResolverFunc].
func UnionTags(fields ...string) duplex.ResolverFunc {
	return func(_ context.Context, c *duplex.Conflict) error {
		if c.Current == nil || c.Change.After == nil {
			return nil
		}
		for _, f := range fields {
			src, _ := c.SourceValue(f)
			cur, _ := c.TargetValue(f)
			a, okA := stringSlice(src)
			b, okB := stringSlice(cur)
			if !c.IsConflicting(f) || !okA || !okB {
				continue
			}
			u := append(append(make([]string, 0, len(a)+len(b)), a...), b...)
			slices.Sort(u)
			c.Set(f, like(slices.Compact(u), cur, src), byUnionTags)
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
