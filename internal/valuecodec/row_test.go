package valuecodec_test

import (
	"encoding/json"
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/valuecodec"
	"github.com/duplexsync/duplex/internal/valuecodec/valuecodectest"
)

// TestRowBinary: a row in binary form reads back exactly, for every kind
// of value (the ones with a kind of their own and, through the tagged
// JSON, the rest); the tagged JSON form still reads.
func TestRowBinary(t *testing.T) {
	t.Parallel()
	row := duplex.Values{
		"nil": nil, "t": true, "f": false, "s": "héllo", "bad": "x\x00\xff", "i": int64(-42), "max": int64(math.MaxInt64),
		"f64": 1.25, "negzero": math.Copysign(0, -1), "inf": math.Inf(-1), "b": []byte{0, 1, 2}, "nb": []byte(nil), "eb": []byte{},
		"time": time.Date(2026, 12, 7, 17, 30, 0, 123456789, time.FixedZone("", -5*3600)), "y10k": time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC),
		"jsonb": duplex.JSONB(`{"a": 1}`), "raw": json.RawMessage(`[1,2]`), "i32": int32(7), "u64": uint64(math.MaxUint64),
		"f32": float32(0.5), "big": big.NewInt(12345), "list": []any{"a", int64(1)}, "m": map[string]any{"k": "v"}, "": "empty name",
	}
	b, err := valuecodec.AppendRow(nil, row)
	require.NoError(t, err)
	got, err := valuecodec.UnmarshalRow(b)
	require.NoError(t, err)
	valuecodectest.RequireSame(t, row, got, "row")

	js, err := valuecodec.MarshalValues(row)
	require.NoError(t, err)
	got, err = valuecodec.UnmarshalRow(js)
	require.NoError(t, err)
	valuecodectest.RequireSame(t, row, got, "row from tagged JSON")

	got, err = valuecodec.UnmarshalRow(nil)
	require.NoError(t, err)
	require.Nil(t, got)
	empty, err := valuecodec.AppendRow(nil, duplex.Values{})
	require.NoError(t, err)
	got, err = valuecodec.UnmarshalRow(empty)
	require.NoError(t, err)
	require.Equal(t, duplex.Values{}, got)

	for i := 1; i < len(b); i++ {
		_, err := valuecodec.UnmarshalRow(b[:i])
		require.Error(t, err, "truncated to %d bytes", i)
	}
	_, err = valuecodec.UnmarshalRow(append(b[:len(b):len(b)], 0))
	require.Error(t, err, "a byte past the end")
}

func TestRowBinaryProperty(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		row := duplex.Values(rapid.MapOf(fieldGen(), scalarGen()).Draw(t, "row"))
		b, err := valuecodec.AppendRow(nil, row)
		require.NoError(t, err)
		got, err := valuecodec.UnmarshalRow(b)
		require.NoError(t, err)
		valuecodectest.RequireSame(t, row, got, "row")
	})
}

func BenchmarkRow(b *testing.B) {
	row := duplex.Values{"id": int64(12345), "name": "customer 12345", "email": "c12345@example.com", "payment_status": "paid",
		"last_activity": time.Now(), "updated_at": time.Now(), "notes": "some notes about the customer"}
	js, _ := valuecodec.MarshalValues(row)
	bin, _ := valuecodec.AppendRow(nil, row)
	b.Run("json/marshal", func(b *testing.B) {
		for b.Loop() {
			_, _ = valuecodec.MarshalValues(row)
		}
	})
	b.Run("binary/marshal", func(b *testing.B) {
		for b.Loop() {
			_, _ = valuecodec.AppendRow(nil, row)
		}
	})
	b.Run("json/unmarshal", func(b *testing.B) {
		for b.Loop() {
			_, _ = valuecodec.UnmarshalRow(js)
		}
	})
	b.Run("binary/unmarshal", func(b *testing.B) {
		for b.Loop() {
			_, _ = valuecodec.UnmarshalRow(bin)
		}
	})
}
