package pgvalue_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgvalue"
)

func TestDecoder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		oid  uint32
		text string
		want any
	}{
		{20, "-9223372036854775808", int64(math.MinInt64)},
		{21, "32767", int64(32767)},
		{700, "0.1", float64(float32(0.1))}, // the real's exact value
		{700, "3.4028235e+38", float64(math.MaxFloat32)},
		{700, "1e-45", float64(math.SmallestNonzeroFloat32)},
		{700, "-Infinity", math.Inf(-1)},
		{701, "0.30000000000000004", 0.30000000000000004},
		{701, "-0", math.Copysign(0, -1)},
		{16, "t", true},
		{17, `\x`, []byte{}},
		{17, `\x00ff`, []byte{0, 0xff}},
		{114, ` {"a":1, "a":2} `, json.RawMessage(` {"a":1, "a":2} `)},
		{3802, `{"n": 12345678901234567890}`, duplex.JSONB(`{"n": 12345678901234567890}`)},
		{1082, "0044-03-15 BC", time.Date(-43, 3, 15, 0, 0, 0, 0, time.UTC)},
		{1082, "infinity", "infinity"},
		{1114, "-infinity", "-infinity"},
		{1184, "2024-02-29 12:34:56.5-03:30", time.Date(2024, 2, 29, 16, 4, 56, 500000000, time.UTC)},
		{1009, `{}`, []string{}},
		{1009, `{"a,b","c\"d","e\\f"," ","",NULL_,"NULL"}`, []string{"a,b", `c"d`, `e\f`, " ", "", "NULL_", "NULL"}},
		{1015, `{x}`, []string{"x"}},
		// Text forms []string cannot hold exactly stay text.
		{1009, `{a,NULL}`, `{a,NULL}`},
		{1009, `{{a,b},{c,d}}`, `{{a,b},{c,d}}`},
		{1009, `[0:1]={x,y}`, `[0:1]={x,y}`},
		{1700, "NaN", "NaN"},
		{1186, "1 year 2 mons", "1 year 2 mons"},
	} {
		got, err := pgvalue.Decoder(tc.oid)([]byte(tc.text))
		require.NoError(t, err, "%d %q", tc.oid, tc.text)
		switch w := tc.want.(type) {
		case float64:
			require.Equal(t, math.Float64bits(w), math.Float64bits(got.(float64)), "%d %q: %v", tc.oid, tc.text, got)
		case time.Time:
			require.True(t, w.Equal(got.(time.Time)), "%d %q: %v", tc.oid, tc.text, got)
		default:
			require.Equal(t, tc.want, got, "%d %q", tc.oid, tc.text)
		}
	}
	for _, tc := range []struct {
		oid  uint32
		text string
	}{{20, "x"}, {16, "true"}, {17, `\x0`}, {17, `0x00`}, {1082, "01/02/2024"}, {1009, "{"}} {
		_, err := pgvalue.Decoder(tc.oid)([]byte(tc.text))
		require.Error(t, err, "%d %q", tc.oid, tc.text)
	}
}

// FuzzDecoder feeds arbitrary text to the decoders of the well-known types:
// they return a value or an error, never panic.
func FuzzDecoder(f *testing.F) {
	for _, s := range []string{"1", "-0", "NaN", `\x00`, "2024-02-29 12:34:56.5-03:30:52 BC", "infinity", `{"a,b",NULL}`, `[0:1]={{a},{b}}`, "{}"} {
		f.Add(s)
	}
	oids := []uint32{16, 17, 19, 20, 21, 23, 25, 26, 114, 700, 701, 1042, 1043, 1082, 1114, 1184, 1700, 2950, 3802, 1009, 1015}
	f.Fuzz(func(t *testing.T, s string) {
		for _, oid := range oids {
			v, err := pgvalue.Decoder(oid)([]byte(s))
			if err == nil && v == nil {
				t.Fatalf("oid %d: %q decoded to nil (NULL) without error", oid, s)
			}
		}
	})
}
