package pgvalue

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// isoCases are text forms of the three types and whether parseISO takes
// them; pgtype decodes every one.
var isoCases = []struct {
	oid  uint32
	text string
	fast bool
}{
	{oidDate, "2024-02-29", true},
	{oidDate, "0001-01-01", true},
	{oidDate, "0044-03-15 BC", false},
	{oidDate, "12345-01-01", false},
	{oidTimestamp, "2026-12-07 21:00:52", true},
	{oidTimestamp, "2026-12-07 21:00:52.000001", true},
	{oidTimestamp, "2026-12-07 21:00:52.1", true},
	{oidTimestamp, "1999-12-31 23:59:59.999999", true},
	{oidTimestamp, "2026-12-07 21:00:52 BC", false},
	{oidTimestamptz, "2026-12-07 21:00:52+00", true},
	{oidTimestamptz, "2024-02-29 12:34:56.5-03:30", true},
	{oidTimestamptz, "2024-01-01 00:00:00+05:45", true},
	{oidTimestamptz, "1900-01-01 00:00:00+00:19:32", true},
	{oidTimestamptz, "1900-01-01 00:00:00-00:19:32", true},
	{oidTimestamptz, "0001-01-01 00:00:00+00", true},
	{oidTimestamptz, "2026-12-07 21:00:52.123456+14", true},
	{oidTimestamptz, "2026-12-07 21:00:52+00 BC", false},
	{oidTimestamptz, "2026-12-07 21:00:52", false}, // no zone: pgtype decides
}

// TestParseISOMatchesPgtype: the fast path takes the common shapes and
// decodes them to the instant pgtype does.
func TestParseISOMatchesPgtype(t *testing.T) {
	t.Parallel()
	for _, tc := range isoCases {
		got, ok := parseISO([]byte(tc.text), tc.oid == oidDate, tc.oid == oidTimestamptz)
		require.Equal(t, tc.fast, ok, "%d %q", tc.oid, tc.text)
		if !ok {
			continue
		}
		requireSameInstant(t, tc.oid, tc.text, got)
	}
}

// TestParseISOProperty: for instants and offsets of every kind, formatted
// as PostgreSQL prints them, the fast path agrees with pgtype; a text the
// fast path refuses is one pgtype is left to decode, never a wrong value.
func TestParseISOProperty(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		sec := rapid.Int64Range(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), time.Date(9998, 12, 31, 0, 0, 0, 0, time.UTC).Unix()).Draw(t, "sec")
		micros := rapid.IntRange(0, 999999).Draw(t, "micros")
		off := rapid.IntRange(-15*3600, 15*3600).Draw(t, "offset")
		zone := time.FixedZone("", off)
		at := time.Unix(sec, int64(micros)*1000).In(zone)
		layout := "2006-01-02 15:04:05.999999"
		var text string
		oid := uint32(rapid.SampledFrom([]uint32{oidDate, oidTimestamp, oidTimestamptz}).Draw(t, "oid"))
		switch oid {
		case oidDate:
			text = at.Format("2006-01-02")
		case oidTimestamp:
			text = at.Format(layout)
		default:
			text = at.Format(layout) + offsetText(off)
		}
		if rapid.Bool().Draw(t, "mangle") {
			b := []byte(text)
			b[rapid.IntRange(0, len(b)-1).Draw(t, "at")] = rapid.SampledFrom([]byte("09:-+. xB")).Draw(t, "byte")
			text = string(b)
		}
		got, ok := parseISO([]byte(text), oid == oidDate, oid == oidTimestamptz)
		if !ok {
			return
		}
		requireSameInstant(t, oid, text, got)
	})
}

// offsetText prints off as PostgreSQL does: +HH, +HH:MM or +HH:MM:SS.
func offsetText(off int) string {
	sign := byte('+')
	if off < 0 {
		sign, off = '-', -off
	}
	out := []byte{sign}
	two := func(n int) { out = append(out, byte('0'+n/10), byte('0'+n%10)) }
	two(off / 3600)
	if m, s := off/60%60, off%60; m != 0 || s != 0 {
		out = append(out, ':')
		two(m)
		if s != 0 {
			out = append(out, ':')
			two(s)
		}
	}
	return string(out)
}

func requireSameInstant(t require.TestingT, oid uint32, text string, got time.Time) {
	want, err := pgtypeDecode(typeMap(), oid, []byte(text))
	require.NoError(t, err, "%d %q: pgtype", oid, text)
	w, ok := want.(time.Time)
	require.True(t, ok, "%d %q: pgtype gave %T", oid, text, want)
	require.True(t, w.Equal(got), "%d %q: fast %v, pgtype %v", oid, text, got, w)
	require.Equal(t, time.UTC, got.Location(), "%d %q", oid, text)
}

// BenchmarkDecodeTimestamptz: the Decoder's fast path against pgtype's.
func BenchmarkDecodeTimestamptz(b *testing.B) {
	text := []byte("2026-12-07 21:00:52.123456+00")
	b.Run("decoder", func(b *testing.B) {
		dec := Decoder(oidTimestamptz)
		for b.Loop() {
			if _, err := dec(text); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pgtype", func(b *testing.B) {
		for b.Loop() {
			if _, err := pgtypeDecode(typeMap(), oidTimestamptz, text); err != nil {
				b.Fatal(err)
			}
		}
	})
}
