package duplex_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// TestEqualJSON checks how Equal compares JSON: a jsonb value (JSONB) by
// its meaning, exactly, and a json value (json.RawMessage) by its text.
func TestEqualJSON(t *testing.T) {
	t.Parallel()
	type pair struct {
		name string
		a, b string
	}
	// Pairs that are the same jsonb value but different texts: equal as
	// JSONB, different as json.
	sameValue := []pair{
		{"key order", `{"a": 1, "b": 2}`, `{"b": 2, "a": 1}`},
		{"whitespace", `{"a":[1,2]}`, " {\n\t\"a\" : [ 1 , 2 ] } "},
		{"1.0 is 1", `{"n": 1.0}`, `{"n": 1}`},
		{"trailing zeros and exponents", `[100, 0.5, -2.50, 1e2, 0]`, `[1E+2, 5e-1, -25e-1, 100.000, -0.0]`},
		{"exact decimals", `12345678901234567890.12345678901234567890`, `1234567890123456789012345678901234567890e-20`},
		{"huge exponents", `1e99999999999999999999`, `10e99999999999999999998`},
		{"duplicate keys: the last wins", `{"a": 1, "a": 2}`, `{"a": 2}`},
		{"nested duplicate keys", `{"o": {"k": [1], "k": [2, {"x": 1, "x": null}]}}`, `{"o": {"k": [2, {"x": null}]}}`},
		{"string escapes", `{"\u0061": "\u00e9\n"}`, `{"a": "é\n"}`},
		{"nested arrays", `[[1, [2.0, [3e0]]], {"z": [], "a": {}}]`, `[ [1,[2,[3]]], {"a":{},"z":[]} ]`},
		{"scalars", ` "x" `, `"x"`},
	}
	for _, tc := range sameValue {
		require.True(t, duplex.Equal(duplex.JSONB(tc.a), duplex.JSONB(tc.b)), "jsonb %s: %s = %s", tc.name, tc.a, tc.b)
		require.True(t, duplex.Equal(duplex.JSONB(tc.b), duplex.JSONB(tc.a)), "jsonb %s, swapped", tc.name)
		require.False(t, duplex.Equal(json.RawMessage(tc.a), json.RawMessage(tc.b)), "json keeps the text: %s: %s != %s", tc.name, tc.a, tc.b)
		ca, err := duplex.JSONB(tc.a).Canonical()
		require.NoError(t, err, tc.name)
		cb, err := duplex.JSONB(tc.b).Canonical()
		require.NoError(t, err, tc.name)
		require.Equal(t, string(ca), string(cb), tc.name)
		require.True(t, json.Valid(ca), "%s: canonical text %s is JSON", tc.name, ca)
	}

	// Pairs of different jsonb values: different however compared.
	different := []pair{
		{"past float64 precision", `{"n": 12345678901234567890}`, `{"n": 12345678901234567891}`},
		{"past float64 precision, decimals", `0.10000000000000000001`, `0.1`},
		{"past float64 range", `1e400`, `1e401`},
		{"below float64 range", `1e-400`, `0`},
		{"sign", `1`, `-1`},
		{"number vs string", `{"n": 1}`, `{"n": "1"}`},
		{"array order", `[1, 2]`, `[2, 1]`},
		{"nested array", `[[1, [2, [3]]]]`, `[[1, [2, [4]]]]`},
		{"array length", `[1, [2]]`, `[1, [2, 2]]`},
		{"missing key", `{"a": 1, "b": null}`, `{"a": 1}`},
		{"duplicate keys: not the first", `{"a": 1, "a": 2}`, `{"a": 1}`},
		{"null vs false", `null`, `false`},
		{"object vs array", `{}`, `[]`},
	}
	for _, tc := range different {
		for _, jsonb := range []bool{false, true} {
			a, b := any(json.RawMessage(tc.a)), any(json.RawMessage(tc.b))
			if jsonb {
				a, b = duplex.JSONB(tc.a), duplex.JSONB(tc.b)
			}
			require.False(t, duplex.Equal(a, b), "%s (%T): %s != %s", tc.name, a, tc.a, tc.b)
			require.False(t, duplex.Equal(b, a), "%s (%T), swapped", tc.name, a)
		}
	}

	// The same text is equal either way.
	for _, s := range []string{`{"n": 12345678901234567890}`, `[]`, ``, `not json`} {
		require.True(t, duplex.Equal(json.RawMessage(s), json.RawMessage(s)), "json %q", s)
		require.True(t, duplex.Equal(duplex.JSONB(s), duplex.JSONB(s)), "jsonb %q", s)
	}
	require.True(t, duplex.Equal(json.RawMessage(nil), json.RawMessage(nil)))
	require.True(t, duplex.Equal(duplex.JSONB(nil), duplex.JSONB(nil)))
}

// TestEqualJSONInvalid: text that is not valid JSON equals only the same
// bytes, as jsonb too, and has no canonical form.
func TestEqualJSONInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ a, b string }{
		{`{"a": 1`, `{"a":1`},
		{`{"a": 1} x`, `{"a": 1}`},
		{`{"a": 1}}`, `{"a": 1}`},
		{`[1, 2,]`, `[1,2,]`},
		{`01`, `1`},
		{`1.`, `1`},
		{`NaN`, `nan`},
		{``, ` `},
		{`{"a": 1}` + "\x00", `{"a": 1}`},
		{"\"\xff\"", "\"\xfe\""},             // invalid UTF-8: encoding/json makes both U+FFFD
		{`"\ud800"`, `"\udbff"`},             // lone high surrogates: likewise
		{`["\udc00"]`, `["\ud800"]`},         // a lone low one, and a high one before a quote
		{`"\ud800\u0041"`, `"\ud801\u0041"`}, // a high one before a non-surrogate
		{strings.Repeat("[", 20000) + strings.Repeat("]", 20000), strings.Repeat("[", 20000) + " " + strings.Repeat("]", 20000)},
	} {
		for _, x := range []any{duplex.JSONB(tc.a), json.RawMessage(tc.a)} {
			var y any = duplex.JSONB(tc.b)
			if _, ok := x.(json.RawMessage); ok {
				y = json.RawMessage(tc.b)
			}
			require.False(t, duplex.Equal(x, y), "%T %q vs %q", x, tc.a, tc.b)
			require.False(t, duplex.Equal(y, x), "%T %q vs %q, swapped", x, tc.a, tc.b)
			require.True(t, duplex.Equal(x, x), "%T %q equals itself", x, tc.a)
		}
		_, err := duplex.JSONB(tc.a).Canonical()
		require.Error(t, err, "%q", tc.a)
	}
}

// TestEqualJSONAcrossTypes: json and jsonb compare as jsonb (a json value
// written to a jsonb column keeps only its jsonb value; and a jsonb value
// agreed before JSONB existed is stored as json.RawMessage); neither
// equals a string or []byte of the same text, nor nil.
func TestEqualJSONAcrossTypes(t *testing.T) {
	t.Parallel()
	j, jb := json.RawMessage(`{"b": 2, "a": 1.0}`), duplex.JSONB(`{"a": 1, "b": 2}`)
	require.True(t, duplex.Equal(j, jb))
	require.True(t, duplex.Equal(jb, j))
	require.False(t, duplex.Equal(json.RawMessage(`{"n": 12345678901234567890}`), duplex.JSONB(`{"n": 12345678901234567891}`)))
	require.False(t, duplex.Equal(duplex.JSONB(`{"n": 12345678901234567891}`), json.RawMessage(`{"n": 12345678901234567890}`)))
	for _, other := range []any{`{"a": 1, "b": 2}`, []byte(`{"a": 1, "b": 2}`), nil} {
		require.False(t, duplex.Equal(jb, other), "%T", other)
		require.False(t, duplex.Equal(other, jb), "%T", other)
		require.False(t, duplex.Equal(json.RawMessage(jb), other), "%T", other)
	}
	require.False(t, duplex.Equal(duplex.JSONB(nil), nil), "a nil JSONB is a value, not NULL")
	// Rows compare field by field with the same rules.
	require.True(t, duplex.Equal(duplex.Values{"doc": duplex.JSONB(`{"n": 1.0}`)}, duplex.Values{"doc": duplex.JSONB(`{"n": 1}`)}))
	require.False(t, duplex.Equal(duplex.Values{"doc": json.RawMessage(`{"n": 1.0}`)}, duplex.Values{"doc": json.RawMessage(`{"n": 1}`)}))
}

// TestJSONBEncoding: a JSONB marshals as the JSON value it holds, like
// json.RawMessage, and renders in a Key as a json.RawMessage always has
// (key texts are stored, by the agreement stores among others).
func TestJSONBEncoding(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(duplex.Values{"doc": duplex.JSONB(`{"n": 12345678901234567891}`), "none": duplex.JSONB(nil)})
	require.NoError(t, err)
	require.JSONEq(t, `{"doc": {"n": 12345678901234567891}, "none": null}`, string(b))
	require.Contains(t, string(b), `12345678901234567891`)
	var back struct{ Doc duplex.JSONB }
	require.NoError(t, json.Unmarshal([]byte(`{"Doc": {"n": 12345678901234567891}}`), &back))
	require.Equal(t, duplex.JSONB(`{"n": 12345678901234567891}`), back.Doc)
	require.Equal(t,
		duplex.Key{{Name: "k", Value: json.RawMessage(`{"a": 1}`)}}.String(),
		duplex.Key{{Name: "k", Value: duplex.JSONB(`{"a": 1}`)}}.String())
}

// TestJSONBCanonicalSurrogates: escaped surrogate pairs and other escapes
// are read as characters; only a half pair alone is refused.
func TestJSONBCanonicalSurrogates(t *testing.T) {
	t.Parallel()
	require.True(t, duplex.Equal(duplex.JSONB(`"\ud83d\ude00 \\ud800 \u00e9"`), duplex.JSONB(`"😀 \\ud800 é"`)))
	c, err := duplex.JSONB(`{"\ud83d\ude00": "\"\\u"}`).Canonical()
	require.NoError(t, err)
	require.Equal(t, `{"😀":"\"\\u"}`, string(c))
}

// FuzzJSONBCanonical: the canonical text of any JSON is valid JSON, its
// own canonical text, and Equal to the input as jsonb.
func FuzzJSONBCanonical(f *testing.F) {
	for _, s := range []string{`{"a": 1.0, "a": [1e2, -0, 0.5e-3]}`, `"\ud83d\ude00"`, `12345678901234567890`, `[1e99999999999999999999]`, `{}`, `"x\u0000"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := duplex.JSONB(s).Canonical()
		if err != nil {
			return
		}
		require.True(t, json.Valid(c), "%q -> %q", s, c)
		again, err := duplex.JSONB(c).Canonical()
		require.NoError(t, err, "%q -> %q", s, c)
		require.Equal(t, string(c), string(again), "%q", s)
		require.True(t, duplex.Equal(duplex.JSONB(s), duplex.JSONB(c)), "%q -> %q", s, c)
	})
}
