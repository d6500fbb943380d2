package loopguard_test

import (
	"encoding/json"
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/loopguard"
)

func TestHashCanonical(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	berlin := time.FixedZone("CET", 3600)
	for _, tt := range []struct {
		name string
		a, b duplex.Values
	}{
		{"int widths", duplex.Values{"n": 7, "m": int32(-3), "u": uint8(200)}, duplex.Values{"n": int64(7), "m": int64(-3), "u": int16(200)}},
		{"uint64 that fits", duplex.Values{"n": uint64(5)}, duplex.Values{"n": int64(5)}},
		{"time location", duplex.Values{"at": at}, duplex.Values{"at": at.In(berlin)}},
		{"negative zero", duplex.Values{"f": math.Copysign(0, -1)}, duplex.Values{"f": 0.0}},
		{"NaN", duplex.Values{"f": math.NaN()}, duplex.Values{"f": -math.NaN()}},
		{"jsonb meaning", duplex.Values{"j": duplex.JSONB(`{"b": [1, 2], "a": null}`)}, duplex.Values{"j": duplex.JSONB(`{"a":null,"b":[1.0,2]}`)}},
		{"jsonb duplicate keys", duplex.Values{"j": duplex.JSONB(`{"a": 1, "a": 2}`)}, duplex.Values{"j": duplex.JSONB(`{"a": 2}`)}},
		{"json text", duplex.Values{"j": json.RawMessage(`{"b": [1, 2]}`)}, duplex.Values{"j": json.RawMessage(`{"b": [1, 2]}`)}},
		{"nil and empty bytes", duplex.Values{"y": []byte(nil)}, duplex.Values{"y": []byte{}}},
		{"big.Int", duplex.Values{"g": big.NewInt(1 << 40)}, duplex.Values{"g": new(big.Int).Lsh(big.NewInt(1), 40)}},
		{"nested", duplex.Values{"m": map[string]any{"x": 1, "y": []any{int32(2), "s"}}}, duplex.Values{"m": duplex.Values{"y": []any{int64(2), "s"}, "x": int64(1)}}},
		{"typed slices", duplex.Values{"l": []int32{1, 2}}, duplex.Values{"l": []int64{1, 2}}},
	} {
		require.Equal(t, loopguard.Hash(tt.a), loopguard.Hash(tt.b), tt.name)
	}

	for _, tt := range []struct {
		name string
		a, b duplex.Values
	}{
		{"value", duplex.Values{"n": 1}, duplex.Values{"n": 2}},
		{"int vs float", duplex.Values{"n": 1}, duplex.Values{"n": 1.0}},
		{"string vs bytes", duplex.Values{"s": "ab"}, duplex.Values{"s": []byte("ab")}},
		{"string vs json", duplex.Values{"s": `"ab"`}, duplex.Values{"s": json.RawMessage(`"ab"`)}},
		{"string vs jsonb", duplex.Values{"s": `"ab"`}, duplex.Values{"s": duplex.JSONB(`"ab"`)}},
		{"json whitespace", duplex.Values{"j": json.RawMessage(`{"a":1}`)}, duplex.Values{"j": json.RawMessage(`{"a": 1}`)}},
		{"json number past float64", duplex.Values{"j": json.RawMessage(`{"n": 12345678901234567890}`)}, duplex.Values{"j": json.RawMessage(`{"n": 12345678901234567891}`)}},
		{"jsonb number past float64", duplex.Values{"j": duplex.JSONB(`{"n": 12345678901234567890}`)}, duplex.Values{"j": duplex.JSONB(`{"n": 12345678901234567891}`)}},
		{"jsonb invalid", duplex.Values{"j": duplex.JSONB(`{"n": 1`)}, duplex.Values{"j": duplex.JSONB(`{"n": 1 `)}},
		{"null vs absent", duplex.Values{"a": 1, "b": nil}, duplex.Values{"a": 1}},
		{"null vs zero", duplex.Values{"b": nil}, duplex.Values{"b": 0}},
		{"null vs empty string", duplex.Values{"b": nil}, duplex.Values{"b": ""}},
		{"false vs 0", duplex.Values{"b": false}, duplex.Values{"b": 0}},
		{"field names", duplex.Values{"a": 1}, duplex.Values{"b": 1}},
		{"field boundaries", duplex.Values{"ab": "c"}, duplex.Values{"a": "bc"}},
		{"time instant", duplex.Values{"at": at}, duplex.Values{"at": at.Add(time.Microsecond)}},
		{"big uint64", duplex.Values{"u": uint64(math.MaxUint64)}, duplex.Values{"u": int64(-1)}},
		{"nesting", duplex.Values{"m": map[string]any{"a": "b"}}, duplex.Values{"m": []any{"a", "b"}}},
		{"no row vs empty row", nil, duplex.Values{}},
	} {
		require.NotEqual(t, loopguard.Hash(tt.a), loopguard.Hash(tt.b), tt.name)
	}
	require.Len(t, loopguard.Hash(nil).String(), 32)
}

// genValue draws a field value of the shapes sources produce.
func genValue(t *rapid.T, depth int) any {
	kinds := 9
	if depth > 1 {
		kinds = 7 // no more nesting
	}
	switch rapid.IntRange(0, kinds-1).Draw(t, "kind") {
	case 0:
		return nil
	case 1:
		return rapid.String().Draw(t, "string")
	case 2:
		return rapid.Int64().Draw(t, "int")
	case 3:
		return rapid.Float64().Draw(t, "float")
	case 4:
		return rapid.Bool().Draw(t, "bool")
	case 5:
		return rapid.SliceOf(rapid.Byte()).Draw(t, "bytes")
	case 6:
		return time.Unix(rapid.Int64Range(-1e10, 1e10).Draw(t, "sec"), rapid.Int64Range(0, 999_999_999).Draw(t, "nsec")).UTC()
	case 7:
		return map[string]any(genRow(t, depth+1))
	default:
		n := rapid.IntRange(0, 4).Draw(t, "len")
		out := make([]any, n)
		for i := range out {
			out[i] = genValue(t, depth+1)
		}
		return out
	}
}

func genRow(t *rapid.T, depth int) duplex.Values {
	n := rapid.IntRange(0, 6).Draw(t, "fields")
	row := duplex.Values{}
	for range n {
		row[rapid.StringMatching(`[a-z_]{1,8}`).Draw(t, "field")] = genValue(t, depth)
	}
	return row
}

// reshape rewrites v into another representation duplex.Equal accepts as
// the same: other integer widths, another time zone, a new map built in
// another insertion order.
func reshape(t *rapid.T, v any) any {
	switch x := v.(type) {
	case int64:
		switch {
		case x >= math.MinInt32 && x <= math.MaxInt32 && rapid.Bool().Draw(t, "int32"):
			return int32(x)
		case x >= 0 && x <= math.MaxUint16 && rapid.Bool().Draw(t, "uint16"):
			return uint16(x)
		case rapid.Bool().Draw(t, "int"):
			return int(x)
		}
		return x
	case time.Time:
		return x.In(time.FixedZone("z", rapid.IntRange(-12, 12).Draw(t, "tz")*3600))
	case []byte:
		return append([]byte(nil), x...)
	case map[string]any:
		return map[string]any(reshapeRow(t, x))
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = reshape(t, x[i])
		}
		return out
	}
	return v
}

func reshapeRow(t *rapid.T, row duplex.Values) duplex.Values {
	keys := make([]string, 0, len(row))
	for k := range row {
		keys = append(keys, k)
	}
	keys = rapid.Permutation(keys).Draw(t, "order")
	out := make(duplex.Values, len(row))
	for _, k := range keys {
		out[k] = reshape(t, row[k])
	}
	return out
}

func TestHashProperties(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		row := genRow(t, 0)
		same := reshapeRow(t, row)
		for k, v := range row {
			if !duplex.Equal(v, same[k]) && !isNested(v) {
				t.Fatalf("reshape broke %s: %#v vs %#v", k, v, same[k])
			}
		}
		if loopguard.Hash(row) != loopguard.Hash(same) {
			t.Fatalf("equal rows hash differently:\n%#v\n%#v", row, same)
		}

		// Changing one field to a value duplex.Equal tells apart changes the hash.
		if len(row) == 0 {
			return
		}
		keys := make([]string, 0, len(row))
		for k := range row {
			keys = append(keys, k)
		}
		k := rapid.SampledFrom(keys).Draw(t, "changed")
		v := genValue(t, 0)
		if duplex.Equal(row[k], v) || isNested(v) || isNested(row[k]) {
			return
		}
		other := same.Clone()
		other[k] = v
		if loopguard.Hash(row) == loopguard.Hash(other) {
			t.Fatalf("different rows hash equally:\n%#v\n%#v", row, other)
		}
	})
}

// isNested reports maps and slices, which duplex.Equal compares with
// reflect.DeepEqual (strict about integer widths) where the hash is not.
func isNested(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return true
	}
	return false
}
