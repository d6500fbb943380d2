package valuecodec_test

import (
	"encoding/json"
	"math"
	"math/big"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/valuecodec"
	"github.com/duplexsync/duplex/internal/valuecodec/valuecodectest"
)

func roundTripValue(t require.TestingT, x any) any {
	b, err := valuecodec.MarshalValue(x)
	require.NoError(t, err)
	require.True(t, json.Valid(b))
	require.NotContains(t, string(b), `\u0000`, "jsonb cannot hold NUL")
	got, err := valuecodec.UnmarshalValue(b)
	require.NoError(t, err, "%s", b)
	return got
}

type point struct {
	X, Y int
}

type label string

func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	bc := time.Date(-43, 3, 15, 0, 0, 0, 0, time.UTC)
	far := time.Date(12345, 1, 2, 3, 4, 5, 6, time.UTC)
	lmt := time.Date(1900, 1, 1, 0, 0, 0, 0, time.FixedZone("LMT", 561)) // offset with seconds
	for name, x := range map[string]any{
		"nil":          nil,
		"string":       "héllo",
		"empty string": "",
		"NUL string":   "a\x00b",
		"bad utf8":     "a\xffb",
		"html":         "<a&b>",
		"true":         true,
		"false":        false,
		"int":          int(-7),
		"int8":         int8(math.MinInt8),
		"int16":        int16(math.MaxInt16),
		"int32":        int32(math.MinInt32),
		"int64 max":    int64(math.MaxInt64),
		"int64 min":    int64(math.MinInt64),
		"uint":         uint(7),
		"uint8":        uint8(255),
		"uint16":       uint16(65535),
		"uint32":       uint32(math.MaxUint32),
		"uint64 max":   uint64(math.MaxUint64),
		"float":        0.30000000000000004,
		"float big":    math.MaxFloat64,
		"float tiny":   math.SmallestNonzeroFloat64,
		"NaN":          math.NaN(),
		"+Inf":         math.Inf(1),
		"-Inf":         math.Inf(-1),
		"-0":           math.Copysign(0, -1),
		"float32":      float32(0.1),
		"float32 NaN":  float32(math.NaN()),
		"bytes":        []byte{0, 1, 2, 0xfe, 0xff},
		"empty bytes":  []byte{},
		"nil bytes":    []byte(nil),
		"json":         json.RawMessage(` {"b":[1,2,{"c":null}],"a":"x", "a":2} `),
		"json nil":     json.RawMessage(nil),
		"json bad":     json.RawMessage("not json \x00\xff"),
		"jsonb":        duplex.JSONB(`{"a": 1.0, "n": 12345678901234567891}`),
		"jsonb nil":    duplex.JSONB(nil),
		"jsonb bad":    duplex.JSONB("not json \x00\xff"),
		"jsonbs":       []duplex.JSONB{duplex.JSONB(`[1]`), nil},
		"time":         time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC),
		"time offset":  time.Date(2026, 3, 4, 5, 6, 7, 1, time.FixedZone("", -(3*3600+30*60))),
		"time zero":    time.Time{},
		"time BC":      bc,
		"time far":     far,
		"time LMT":     lmt,
		"bigint":       new(big.Int).Lsh(big.NewInt(-3), 200),
		"bigint nil":   (*big.Int)(nil),
		"list":         []any{"a", int64(1), nil, []byte("x"), map[string]any{"k": "v"}, []any{}},
		"list empty":   []any{},
		"list nil":     []any(nil),
		"map": map[string]any{
			"str": "v", "num": int64(3), "null": nil,
			"deep": map[string]any{"flag": false, "nil map": map[string]any(nil)},
		},
		"map empty":      map[string]any{},
		"map nil":        map[string]any(nil),
		"map dirty keys": map[string]any{"a\x00": int64(1), "\xff": "x", "ok": nil},
		"values":         duplex.Values{"id": int64(1), "v": duplex.Values{"x": nil}},
		"values nil":     duplex.Values(nil),
		"strings":        []string{"a", "", "b\x00"},
		"strings nil":    []string(nil),
		"int64s":         []int64{1, math.MinInt64},
		"times":          []time.Time{bc, far},
		"bytes list":     [][]byte{[]byte("ab"), nil, {}},
		"string map":     map[string]string{"k": "v", "\xff": "y"},
		"string map nil": map[string]string(nil),
		"int map":        map[string]int{"a": 1},
		"list of lists":  []any{[]any{[]any{}}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			valuecodectest.RequireSame(t, x, roundTripValue(t, x), name)
		})
	}
}

func TestCodecOpaque(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want any
	}{
		{point{X: 1, Y: 2}, map[string]any{"X": int64(1), "Y": int64(2)}},
		{label("vip"), "vip"},
		{[]point{{X: 1}}, []any{map[string]any{"X": int64(1), "Y": int64(0)}}},
		{map[int]string{1: "a"}, map[string]any{"1": "a"}},
		{struct{ F float64 }{F: 1.5}, map[string]any{"F": 1.5}},
		{make(chan int), nil}, // encoding/json cannot: its fmt.Sprint text
		{struct{ S string }{S: "a\x00"}, "{a\x00}"},
		{[2]int{1, 2}, []any{int64(1), int64(2)}},
		{json.Number("12"), int64(12)},
	} {
		got := roundTripValue(t, tc.in)
		if tc.want == nil {
			require.IsType(t, "", got, "%T", tc.in)
			continue
		}
		valuecodectest.RequireSame(t, tc.want, got, reflect.TypeOf(tc.in).String())
	}
	require.Nil(t, roundTripValue(t, (*point)(nil)), "a nil pointer is JSON null")
}

func TestCodecRejectsGarbage(t *testing.T) {
	t.Parallel()
	for _, b := range []string{
		`{"t":"nope"}`,
		`{"t":"int8","v":"300"}`,
		`{"t":"bytes","v":"!!"}`,
		`{"t":"slice","e":"nope","v":[]}`,
		`{"t":"slice","e":"s","v":[{"t":"int64","v":"1"}]}`,
		`{"t":"time","v":"yesterday"}`,
		`[]`,
	} {
		_, err := valuecodec.UnmarshalValue([]byte(b))
		require.Error(t, err, b)
	}
}

// scalarGen draws the scalar values the codec's property tests store.
func scalarGen() *rapid.Generator[any] {
	return rapid.OneOf(
		rapid.Map(rapid.String(), func(s string) any { return s }),
		rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) any { return string(b) }), // any bytes
		rapid.Map(rapid.Int64(), func(i int64) any { return i }),
		rapid.Map(rapid.Uint64(), func(u uint64) any { return u }),
		rapid.Map(rapid.Uint64(), func(u uint64) any { return math.Float64frombits(u) }),
		rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) any { return b }),
		rapid.Map(rapid.Int64Range(-1<<50, 1<<50), func(ns int64) any {
			return time.Unix(0, ns*1000).In(time.FixedZone("", 3600))
		}),
		rapid.Just[any](nil),
		rapid.Map(rapid.Bool(), func(b bool) any { return b }),
	)
}

// fieldGen draws field names: any text, or any bytes.
func fieldGen() *rapid.Generator[string] {
	return rapid.OneOf(rapid.String(), rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) string { return string(b) }))
}

func TestCodecProperty(t *testing.T) {
	t.Parallel()
	scalar := scalarGen()
	rapid.Check(t, func(t *rapid.T) {
		m := rapid.MapOf(fieldGen(), scalar).Draw(t, "map")
		l := rapid.SliceOf(scalar).Draw(t, "list")
		x := duplex.Values{"m": map[string]any(m), "l": l}
		valuecodectest.RequireSame(t, x, roundTripValue(t, x), "x")
	})
}

func TestValues(t *testing.T) {
	t.Parallel()
	for name, v := range map[string]duplex.Values{
		"nil":   nil,
		"empty": {},
		"row":   {"id": int64(1), "b": []byte(nil), "t\x00": "x\xff", "n": nil},
	} {
		b, err := valuecodec.MarshalValues(v)
		require.NoError(t, err, name)
		got, err := valuecodec.UnmarshalValues(b)
		require.NoError(t, err, name)
		valuecodectest.RequireSame(t, v, got, name)
	}
	got, err := valuecodec.UnmarshalValues(nil)
	require.NoError(t, err)
	require.Nil(t, got)
	got, err = valuecodec.UnmarshalValues([]byte(`{"t":"map","v":{"a":{"t":"null"}}}`))
	require.NoError(t, err)
	require.Equal(t, duplex.Values{"a": nil}, got, "a map[string]any reads as Values")
	_, err = valuecodec.UnmarshalValues([]byte(`{"t":"int64","v":"1"}`))
	require.Error(t, err)
}

func TestClean(t *testing.T) {
	t.Parallel()
	require.True(t, valuecodec.Clean("héllo"))
	require.False(t, valuecodec.Clean("a\x00"))
	require.False(t, valuecodec.Clean("a\xff"))
}
