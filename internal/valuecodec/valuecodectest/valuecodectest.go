// Package valuecodectest holds test helpers for code that stores values
// with internal/valuecodec.
package valuecodectest

import (
	"math"
	"math/big"
	"reflect"
	"time"

	"github.com/stretchr/testify/require"
)

// RequireSame requires got to be want exactly: the same types all the way
// down, floats by bits (any NaN for NaN), times by instant and offset, nil only for nil.
func RequireSame(t require.TestingT, want, got any, path string) {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	require.Equal(t, reflect.TypeOf(want), reflect.TypeOf(got), "%s: type", path)
	if want == nil {
		return
	}
	w, g := reflect.ValueOf(want), reflect.ValueOf(got)
	switch x := want.(type) {
	case float64:
		if math.IsNaN(x) { // NaN payloads are not kept
			require.True(t, math.IsNaN(got.(float64)), "%s: %v", path, got)
			return
		}
		require.Equal(t, math.Float64bits(x), math.Float64bits(got.(float64)), "%s: %v vs %v", path, x, got)
		return
	case float32:
		if x != x {
			require.True(t, got.(float32) != got.(float32), "%s: %v", path, got)
			return
		}
		require.Equal(t, math.Float32bits(x), math.Float32bits(got.(float32)), "%s: %v vs %v", path, x, got)
		return
	case time.Time:
		y := got.(time.Time)
		require.True(t, x.Equal(y), "%s: %s vs %s", path, x, y)
		_, wo := x.Zone()
		_, gOff := y.Zone()
		require.Equal(t, wo, gOff, "%s: offset", path)
		return
	case *big.Int:
		require.Equal(t, x == nil, got.(*big.Int) == nil, path)
		if x != nil {
			require.Zero(t, x.Cmp(got.(*big.Int)), path)
		}
		return
	}
	switch w.Kind() {
	case reflect.Slice:
		require.Equal(t, w.IsNil(), g.IsNil(), "%s: nil slice", path)
		require.Equal(t, w.Len(), g.Len(), "%s: len", path)
		for i := range w.Len() {
			RequireSame(t, w.Index(i).Interface(), g.Index(i).Interface(), path+"[]")
		}
	case reflect.Map:
		require.Equal(t, w.IsNil(), g.IsNil(), "%s: nil map", path)
		require.Equal(t, w.Len(), g.Len(), "%s: len", path)
		for it := w.MapRange(); it.Next(); {
			gv := g.MapIndex(it.Key())
			require.True(t, gv.IsValid(), "%s: key %q missing", path, it.Key())
			RequireSame(t, it.Value().Interface(), gv.Interface(), path+"."+it.Key().String())
		}
	default:
		require.Equal(t, want, got, path)
	}
}
