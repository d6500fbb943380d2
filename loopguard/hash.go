package loopguard

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"time"

	"github.com/duplexsync/duplex"
)

// Sum is a canonical row hash: the first 128 bits of a SHA-256.
type Sum [16]byte

// String returns the sum in hex.
func (s Sum) String() string { return hex.EncodeToString(s[:]) }

// Hash returns the canonical hash of a row; a nil row (no row: deleted)
// has its own hash, different from every row's, the empty row's included.
//
// Values that duplex.Equal treats as equal hash equal: the encoding sorts
// field names, tags every value with its kind, and normalises what Equal
// looks through: integers of any width (int, int32, int64, ..., and uint64
// values that fit an int64) by value, times by instant (not location),
// floats with -0 as 0 and every NaN alike, duplex.JSONB by its jsonb value
// (duplex.JSONB.Canonical: keys sorted, whitespace ignored, numbers by
// exact value), *big.Int by value, and nested maps and slices element by
// element; json.RawMessage (a json column, whose text is its value) hashes
// by its bytes. Values Equal tells apart hash apart (a string and []byte
// with the same bytes, 1 and 1.0, JSON numbers past float64's precision),
// with the one exception that a few pairs Equal distinguishes by Go type
// alone ([]string and []any with the same elements, int64 and uint64) hash
// alike. Conversely a json.RawMessage and a duplex.JSONB that Equal finds
// equal (a json and a jsonb column of the same value) hash apart: an echo
// between such columns is not recognised and passes, which is safe.
func Hash(row duplex.Values) Sum {
	var buf []byte
	if row == nil {
		buf = append(buf, 'D')
	} else {
		buf = appendMap(buf, row)
	}
	full := sha256.Sum256(buf)
	var s Sum
	copy(s[:], full[:])
	return s
}

func appendLen(b []byte, n int) []byte { return binary.AppendUvarint(b, uint64(n)) }

func appendBytes(b []byte, tag byte, p []byte) []byte {
	b = append(b, tag)
	b = appendLen(b, len(p))
	return append(b, p...)
}

func appendMap(b []byte, m map[string]any) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, 'm')
	b = appendLen(b, len(keys))
	for _, k := range keys {
		b = appendLen(b, len(k))
		b = append(b, k...)
		b = appendValue(b, m[k])
	}
	return b
}

func appendInt(b []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 'i'), uint64(v))
}

func appendFloat(b []byte, f float64) []byte {
	switch {
	case f == 0:
		f = 0 // -0 == 0
	case math.IsNaN(f):
		f = math.NaN()
	}
	return binary.BigEndian.AppendUint64(append(b, 'f'), math.Float64bits(f))
}

func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, 'N')
	case string:
		return appendBytes(b, 's', []byte(x))
	case bool:
		if x {
			return append(b, 't', 1)
		}
		return append(b, 't', 0)
	case int:
		return appendInt(b, int64(x))
	case int8:
		return appendInt(b, int64(x))
	case int16:
		return appendInt(b, int64(x))
	case int32:
		return appendInt(b, int64(x))
	case int64:
		return appendInt(b, x)
	case uint:
		return appendUint(b, uint64(x))
	case uint8:
		return appendInt(b, int64(x))
	case uint16:
		return appendInt(b, int64(x))
	case uint32:
		return appendInt(b, int64(x))
	case uint64:
		return appendUint(b, x)
	case float64:
		return appendFloat(b, x)
	case float32:
		return appendFloat(b, float64(x))
	case []byte:
		return appendBytes(b, 'y', x)
	case time.Time:
		b = append(b, 'T')
		b = binary.BigEndian.AppendUint64(b, uint64(x.Unix()))
		return binary.BigEndian.AppendUint32(b, uint32(x.Nanosecond()))
	case json.RawMessage:
		return appendBytes(b, 'J', x)
	case duplex.JSONB:
		if canon, err := x.Canonical(); err == nil {
			return appendBytes(b, 'j', canon)
		}
		return appendBytes(b, 'B', x)
	case *big.Int:
		if x == nil {
			return append(b, 'N')
		}
		return appendBytes(b, 'g', []byte(x.String()))
	case duplex.Values:
		if x == nil {
			return append(b, 'N')
		}
		return appendMap(b, x)
	case map[string]any:
		if x == nil {
			return append(b, 'N')
		}
		return appendMap(b, x)
	case []any:
		if x == nil {
			return append(b, 'N')
		}
		b = append(b, 'a')
		b = appendLen(b, len(x))
		for _, e := range x {
			b = appendValue(b, e)
		}
		return b
	}
	return appendReflect(b, reflect.ValueOf(v))
}

func appendUint(b []byte, u uint64) []byte {
	if u <= math.MaxInt64 {
		return appendInt(b, int64(u))
	}
	return binary.BigEndian.AppendUint64(append(b, 'u'), u)
}

// appendReflect encodes the remaining shapes: slices and arrays of any
// element type, maps with string keys, and, last, anything else by its Go
// type and fmt's %#v (which prints maps sorted).
func appendReflect(b []byte, v reflect.Value) []byte {
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return append(b, 'N')
		}
		b = append(b, 'a')
		b = appendLen(b, v.Len())
		for i := range v.Len() {
			b = appendValue(b, v.Index(i).Interface())
		}
		return b
	case reflect.Map:
		if v.Type().Key().Kind() == reflect.String {
			if v.IsNil() {
				return append(b, 'N')
			}
			m := make(map[string]any, v.Len())
			for it := v.MapRange(); it.Next(); {
				m[it.Key().String()] = it.Value().Interface()
			}
			return appendMap(b, m)
		}
	}
	return appendBytes(b, 'x', fmt.Appendf(nil, "%s\x00%#v", v.Type(), v.Interface()))
}
