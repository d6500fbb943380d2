// JSON values: JSONB and the canonical form that compares two documents by value.

package duplex

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// JSONB is the value of a PostgreSQL jsonb column: its JSON text. It is a
// type of its own, not json.RawMessage (which holds json columns), because
// the two compare differently: PostgreSQL's json keeps the text as written,
// so two json values are [Equal] only byte for byte, while jsonb keeps a
// value, so two JSONB values are Equal when they mean the same jsonb value
// (see [JSONB.Canonical]).
//
// JSONB encodes to JSON as the value itself, like json.RawMessage.
type JSONB []byte

// MarshalJSON returns j itself ("null" for a nil j), like json.RawMessage.
func (j JSONB) MarshalJSON() ([]byte, error) {
	if j == nil {
		return []byte("null"), nil
	}
	return j, nil
}

// UnmarshalJSON sets *j to a copy of data, like json.RawMessage.
func (j *JSONB) UnmarshalJSON(data []byte) error {
	if j == nil {
		return errors.New("duplex: JSONB: UnmarshalJSON on nil pointer")
	}
	*j = append((*j)[0:0], data...)
	return nil
}

// errInvalidJSON reports JSON text that does not parse.
var errInvalidJSON = errors.New("duplex: invalid JSON")

// Canonical returns the canonical text of the jsonb value j: two JSONB
// values hold the same jsonb value (PostgreSQL's jsonb = is true) exactly
// when their canonical texts are equal. Whitespace goes, object keys are
// sorted (a duplicate key keeps its last value, as jsonb does), strings
// are re-escaped in one way, and numbers are written exactly, with no
// float64 rounding, as digits and a power of ten without redundant zeros
// (1, 1.0 and 0.1e1 all become 1; 100 becomes 1e2; -0 becomes 0). The
// result is itself valid JSON of the same value. It fails when j is not
// valid JSON or holds text jsonb rejects and encoding/json would replace
// (invalid UTF-8, half a surrogate pair escaped alone), so that two such
// texts are never found equal.
func (j JSONB) Canonical() ([]byte, error) {
	if !json.Valid(j) || !utf8.Valid(j) || loneSurrogate(j) {
		return nil, errInvalidJSON
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return appendCanonical(make([]byte, 0, len(j)), v)
}

// loneSurrogate reports whether the valid JSON text b has a \u escape of
// half a UTF-16 surrogate pair without its other half.
func loneSurrogate(b []byte) bool {
	uEscape := func(i int) (uint64, bool) { // the escape \uXXXX at b[i:], if any
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		r, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 16)
		return r, err == nil
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		r, ok := uEscape(i)
		switch {
		case !ok:
			i++ // another escape: skip the escaped character
		case r >= 0xdc00 && r <= 0xdfff:
			return true
		case r >= 0xd800 && r <= 0xdbff:
			if lo, ok := uEscape(i + 6); !ok || lo < 0xdc00 || lo > 0xdfff {
				return true
			}
			i += 11
		default:
			i += 5
		}
	}
	return false
}

// appendCanonical appends the canonical text of v, a value decoded by
// encoding/json with UseNumber.
func appendCanonical(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case json.Number:
		return appendNumber(b, string(x)), nil
	case string:
		s, err := json.Marshal(x)
		return append(b, s...), err
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendCanonical(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			s, err := json.Marshal(k)
			if err != nil {
				return nil, err
			}
			b = append(append(b, s...), ':')
			if b, err = appendCanonical(b, x[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, errInvalidJSON // encoding/json decodes to nothing else
}

// appendNumber appends the JSON number s (valid JSON syntax) in canonical
// form: an optional minus, the significant digits without leading or
// trailing zeros, and "e" with the power of ten unless it is 0; zero is
// "0". Numbers equal in value have the same form, however large their
// digits or exponents.
func appendNumber(b []byte, s string) []byte {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, exp, _ := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return append(b, '0')
	}
	trimmed := strings.TrimRight(digits, "0")
	// The value is digits × 10^(exp - len(frac)) = trimmed × 10^e.
	shift := int64(len(digits)-len(trimmed)) - int64(len(frac))
	exp = strings.TrimPrefix(exp, "+")
	if exp == "" {
		exp = "0"
	}
	var e string
	if x, err := strconv.ParseInt(exp, 10, 64); err == nil && x > math.MinInt64/2 && x < math.MaxInt64/2 {
		e = strconv.FormatInt(x+shift, 10)
	} else { // an exponent near or past int64's range: exact all the same
		z, _ := new(big.Int).SetString(exp, 10)
		e = z.Add(z, big.NewInt(shift)).String()
	}
	if neg {
		b = append(b, '-')
	}
	b = append(b, trimmed...)
	if e != "0" {
		b = append(append(b, 'e'), e...)
	}
	return b
}

// jsonEqual reports whether two JSON texts are equal: byte for byte when
// both are json (json.RawMessage), as jsonb values when either is JSONB (a
// json text written to a jsonb column keeps only its jsonb value, so that
// is all a json and a jsonb column can agree on). Text that is not valid
// JSON equals only itself.
func jsonEqual(x, y []byte, jsonb bool) bool {
	if bytes.Equal(x, y) {
		return true
	}
	if !jsonb {
		return false
	}
	cx, err := JSONB(x).Canonical()
	if err != nil {
		return false
	}
	cy, err := JSONB(y).Canonical()
	return err == nil && bytes.Equal(cx, cy)
}
