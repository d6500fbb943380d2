// Package pgvalue decodes PostgreSQL values from their text form into the Go
// values duplex carries in duplex.Values. The logical replication source
// and the PostgreSQL applier both use it, so a value read either way has
// one representation and compares equal with duplex.Equal.
package pgvalue

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/duplexsync/duplex"
)

var (
	typesOnce sync.Once
	types     *pgtype.Map
	typesMu   sync.Mutex
)

// typeMap returns a shared pgtype.Map; its Scan and codecs are used under typesMu.
func typeMap() *pgtype.Map {
	typesOnce.Do(func() { types = pgtype.NewMap() })
	return types
}

// Well-known type OIDs.
const (
	oidBool        = 16
	oidBytea       = 17
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidBPChar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidUUID        = 2950
	oidJSONB       = 3802
	oidTextArray   = 1009
	oidVarcharArr  = 1015
)

// Decoder returns the function decoding a column's text value. Values
// are decoded to plain Go types where that is exact (integers to int64,
// floats to float64, text to string, bytea to []byte, timestamps to
// time.Time, json to json.RawMessage, jsonb to duplex.JSONB, text arrays
// to []string); every other type (numeric, uuid, intervals, enums,
// domains, arrays of other types, ranges, geometric types, ...) keeps
// PostgreSQL's own text form, which round-trips exactly when written back
// to a column of the same type. json and jsonb get different Go types
// because duplex.Equal compares them differently: json by its text, jsonb
// by its value.
func Decoder(oid uint32) func([]byte) (any, error) {
	types := typeMap()
	switch oid {
	case oidInt2, oidInt4, oidInt8, oidOID:
		return func(b []byte) (any, error) { return strconv.ParseInt(string(b), 10, 64) }
	case oidFloat4:
		// The nearest float32, held exactly in a float64: "0.1" is the real
		// 0.100000001490116..., which is what a real read back through pgx
		// is, not the float64 0.1.
		return func(b []byte) (any, error) { return strconv.ParseFloat(string(b), 32) }
	case oidFloat8:
		return func(b []byte) (any, error) { return strconv.ParseFloat(string(b), 64) }
	case oidBool:
		return func(b []byte) (any, error) {
			switch string(b) {
			case "t":
				return true, nil
			case "f":
				return false, nil
			}
			return nil, fmt.Errorf("invalid bool %q", b)
		}
	case oidText, oidVarchar, oidBPChar, oidName:
		return func(b []byte) (any, error) { return string(b), nil }
	case oidBytea:
		return func(b []byte) (any, error) {
			if len(b) < 2 || b[0] != '\\' || b[1] != 'x' {
				return nil, errors.New("bytea not in hex format")
			}
			out := make([]byte, hex.DecodedLen(len(b)-2))
			_, err := hex.Decode(out, b[2:])
			return out, err
		}
	case oidJSON:
		return func(b []byte) (any, error) { return json.RawMessage(append([]byte(nil), b...)), nil }
	case oidJSONB:
		return func(b []byte) (any, error) { return duplex.JSONB(append([]byte(nil), b...)), nil }
	case oidTimestamptz, oidTimestamp, oidDate:
		return func(b []byte) (any, error) {
			if t, ok := parseISO(b, oid == oidDate, oid == oidTimestamptz); ok {
				return t, nil
			}
			v, err := pgtypeDecode(types, oid, b)
			if err != nil {
				return nil, err
			}
			if t, ok := v.(time.Time); ok {
				return t.UTC(), nil // the same value whatever the machine's time zone
			}
			return string(b), nil // infinity and friends keep their text form
		}
	case oidTextArray, oidVarcharArr:
		return func(b []byte) (any, error) {
			var arr pgtype.Array[*string]
			typesMu.Lock()
			err := types.Scan(oidTextArray, pgtype.TextFormatCode, b, &arr)
			typesMu.Unlock()
			if err != nil {
				return nil, err
			}
			// []string holds only one-dimensional arrays indexed from 1
			// without NULL elements; anything else (a NULL element, two
			// dimensions, "[0:1]={a,b}") keeps its text form, which
			// round-trips exactly.
			if len(arr.Dims) > 1 || len(arr.Dims) == 1 && arr.Dims[0].LowerBound != 1 {
				return string(b), nil
			}
			out := make([]string, len(arr.Elements))
			for i, e := range arr.Elements {
				if e == nil {
					return string(b), nil
				}
				out[i] = *e
			}
			return out, nil
		}
	}
	return func(b []byte) (any, error) { return string(b), nil }
}

func pgtypeDecode(types *pgtype.Map, oid uint32, b []byte) (any, error) {
	typesMu.Lock()
	defer typesMu.Unlock()
	t, ok := types.TypeForOID(oid)
	if !ok {
		return string(b), nil
	}
	return t.Codec.DecodeValue(types, oid, pgtype.TextFormatCode, b)
}
