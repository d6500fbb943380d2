package applypg

import (
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/duplexsync/duplex"
)

// Base type OIDs that change how a Go value is rendered.
const (
	oidBytea       = 17
	oidJSON        = 114
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidJSONB       = 3802
	oidBPChar      = 1042
	oidVarchar     = 1043
	oidBit         = 1560
	oidVarbit      = 1562
)

// textOf renders v in the text input form of PostgreSQL for a column whose
// base type is base (domains resolved). The server casts the text to the
// column's type, so every Go value pgvalue produces (int64, float64, bool,
// string text forms, []byte, time.Time, json.RawMessage, duplex.JSONB,
// []string) goes back exactly. null reports SQL NULL.
func textOf(v any, base uint32) (s string, null bool, err error) {
	switch x := v.(type) {
	case nil:
		return "", true, nil
	case string:
		return x, false, nil
	case json.RawMessage:
		if x == nil {
			return "", true, nil
		}
		return string(x), false, nil
	case duplex.JSONB:
		if x == nil {
			return "", true, nil
		}
		return string(x), false, nil
	case []byte:
		if x == nil {
			return "", true, nil
		}
		if base == oidBytea {
			b := make([]byte, 2+hex.EncodedLen(len(x)))
			b[0], b[1] = '\\', 'x'
			hex.Encode(b[2:], x)
			return string(b), false, nil
		}
		return string(x), false, nil
	case bool:
		if x {
			return "t", false, nil
		}
		return "f", false, nil
	case int64:
		return strconv.FormatInt(x, 10), false, nil
	case int:
		return strconv.Itoa(x), false, nil
	case int32:
		return strconv.FormatInt(int64(x), 10), false, nil
	case int16:
		return strconv.FormatInt(int64(x), 10), false, nil
	case int8:
		return strconv.FormatInt(int64(x), 10), false, nil
	case uint64:
		return strconv.FormatUint(x, 10), false, nil
	case uint:
		return strconv.FormatUint(uint64(x), 10), false, nil
	case uint32:
		return strconv.FormatUint(uint64(x), 10), false, nil
	case uint16:
		return strconv.FormatUint(uint64(x), 10), false, nil
	case uint8:
		return strconv.FormatUint(uint64(x), 10), false, nil
	case float64:
		return formatFloat(x, 64), false, nil
	case float32:
		return formatFloat(float64(x), 32), false, nil
	case time.Time:
		return formatTime(x, base), false, nil
	case time.Duration:
		return strconv.FormatInt(x.Microseconds(), 10) + " microseconds", false, nil
	case *big.Int:
		if x == nil {
			return "", true, nil
		}
		return x.String(), false, nil
	case *big.Float:
		if x == nil {
			return "", true, nil
		}
		return x.Text('f', -1), false, nil
	case []string:
		if x == nil && base != oidJSON && base != oidJSONB {
			return "", true, nil
		}
	case driver.Valuer:
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer && rv.IsNil() {
			return "", true, nil
		}
		dv, err := x.Value()
		if err != nil {
			return "", false, err
		}
		if _, again := dv.(driver.Valuer); again {
			return "", false, fmt.Errorf("driver.Valuer %T returned another Valuer", v)
		}
		return textOf(dv, base)
	}
	if base == oidJSON || base == oidJSONB {
		b, err := json.Marshal(v)
		if err != nil {
			return "", false, err
		}
		return string(b), false, nil
	}
	if s, ok := v.(fmt.Stringer); ok {
		return s.String(), false, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return "", true, nil
		}
		var b strings.Builder
		if err := appendArray(&b, rv); err != nil {
			return "", false, err
		}
		return b.String(), false, nil
	case reflect.Pointer:
		if rv.IsNil() {
			return "", true, nil
		}
		return textOf(rv.Elem().Interface(), base)
	case reflect.String:
		return rv.String(), false, nil
	case reflect.Bool:
		return textOf(rv.Bool(), base)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10), false, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(rv.Uint(), 10), false, nil
	case reflect.Float32, reflect.Float64:
		return formatFloat(rv.Float(), rv.Type().Bits()), false, nil
	}
	return "", false, fmt.Errorf("cannot write a Go %T to PostgreSQL", v)
}

// appendArray writes a PostgreSQL array literal: every element quoted,
// NULL for nil elements, nested slices as nested arrays.
func appendArray(b *strings.Builder, rv reflect.Value) error {
	b.WriteByte('{')
	for i := range rv.Len() {
		if i > 0 {
			b.WriteByte(',')
		}
		e := rv.Index(i)
		for e.Kind() == reflect.Interface && !e.IsNil() {
			e = e.Elem()
		}
		if (e.Kind() == reflect.Interface || e.Kind() == reflect.Pointer) && e.IsNil() {
			b.WriteString("NULL")
			continue
		}
		if (e.Kind() == reflect.Slice && e.Type().Elem().Kind() != reflect.Uint8) || e.Kind() == reflect.Array {
			if err := appendArray(b, e); err != nil {
				return err
			}
			continue
		}
		s, null, err := textOf(e.Interface(), 0)
		if err != nil {
			return err
		}
		if null {
			b.WriteString("NULL")
			continue
		}
		b.WriteByte('"')
		for j := 0; j < len(s); j++ {
			if s[j] == '"' || s[j] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(s[j])
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return nil
}

func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}

// formatTime renders t for a date, timestamp or (any other type)
// timestamptz column, ISO style, microsecond precision, years before 1 AD
// as "BC" (time.Time year 0 is 1 BC). A timestamp (without time zone) gets
// t's wall clock; pgvalue decodes those in UTC.
func formatTime(t time.Time, base uint32) string {
	b := make([]byte, 0, 40)
	year := t.Year()
	bc := year <= 0
	if bc {
		year = 1 - year
	}
	b = appendInt(b, year, 4)
	b = append(b, '-')
	b = appendInt(b, int(t.Month()), 2)
	b = append(b, '-')
	b = appendInt(b, t.Day(), 2)
	if base != oidDate {
		b = append(b, ' ')
		b = appendInt(b, t.Hour(), 2)
		b = append(b, ':')
		b = appendInt(b, t.Minute(), 2)
		b = append(b, ':')
		b = appendInt(b, t.Second(), 2)
		if us := t.Nanosecond() / 1000; us != 0 {
			b = append(b, '.')
			b = appendInt(b, us, 6)
		}
		if base != oidTimestamp {
			_, off := t.Zone()
			if off < 0 {
				b = append(b, '-')
				off = -off
			} else {
				b = append(b, '+')
			}
			b = appendInt(b, off/3600, 2)
			b = append(b, ':')
			b = appendInt(b, off/60%60, 2)
			if off%60 != 0 {
				b = append(b, ':')
				b = appendInt(b, off%60, 2)
			}
		}
	}
	if bc {
		b = append(b, " BC"...)
	}
	return string(b)
}

func appendInt(b []byte, n, width int) []byte {
	s := strconv.Itoa(n)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}
