// Package valuecodec stores duplex values (a field's value, a whole
// duplex.Values row) as JSON that PostgreSQL's jsonb holds exactly, without
// losing their Go types, which plain encoding/json would (int64 -> float64,
// []byte -> string, time.Time -> string, nil map vs empty map...). The
// PostgreSQL stores (dlq/dlqpg, agree/agreepg) share it.
//
// Every value is an object tagged with its type:
//
//	{"t":"null"}                          nil
//	{"t":"s","v":"text"}                  string
//	{"t":"bool","v":true}                 bool
//	{"t":"int64","v":"42"}                int, int8..int64, uint..uint64 (tag = Go type, decimal string)
//	{"t":"f64","v":"1.25"}                float64, float32 ("f32"); "NaN", "+Inf", "-Inf", "-0" exact
//	{"t":"bytes","v":"AAEC"}              []byte, standard base64; no "v": nil
//	{"t":"time","v":"2026-...Z"}          time.Time, RFC 3339 with nanoseconds and offset
//	{"t":"time","bin":"..."}              time.Time the RFC 3339 text cannot hold exactly (years
//	                                      outside 0-9999, offsets with seconds): MarshalBinary, base64
//	{"t":"json","v":"{\"a\":1}"}          json.RawMessage, its exact bytes as a string; no "v": nil
//	{"t":"jsonb","v":"{\"a\": 1}"}        duplex.JSONB, likewise
//	{"t":"bigint","v":"123"}              *big.Int; no "v": nil
//	{"t":"list","v":[...]}                []any; no "v": nil
//	{"t":"map","v":{"k":...}}             map[string]any; no "v": nil
//	{"t":"values","v":{"k":...}}          duplex.Values; no "v": nil
//	{"t":"slice","e":"s","v":[...]}       []T for a T with a tag above ([]string, []int64, [][]byte...)
//	{"t":"mapof","e":"s","v":{...}}       map[string]T likewise
//	{"t":"opaque","go":"T","v":...}       any other type: its encoding/json form, decoded as
//	                                      generic JSON (objects, []any, int64 or float64, string,
//	                                      bool); {"t":"opaque","go":"T","text":"..."} (fmt.Sprint,
//	                                      decoded as a string) when encoding/json cannot encode it
//
// jsonb cannot hold a NUL character or invalid UTF-8, and encoding/json
// replaces invalid UTF-8, so a string (or []byte text) that is not clean
// ([Clean]) is stored as {"b64":"..."} in place of "v" (and a map with such
// a key as "kv": [[key, value], ...] in place of "v").
//
// The format is stored in databases: change it only compatibly.
package valuecodec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/duplexsync/duplex"
)

// Clean reports whether s can be stored as a jsonb (or text) string
// exactly: valid UTF-8 without NUL.
func Clean(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// MarshalValue returns the JSON of x's tagged form. A value of a type the
// format does not know is stored as "opaque".
func MarshalValue(x any) (json.RawMessage, error) {
	return json.Marshal(encodeValue(x))
}

// UnmarshalValue returns the value whose tagged form is b.
func UnmarshalValue(b []byte) (any, error) {
	return decodeValue(b)
}

// MarshalValues returns the JSON of v's tagged form ("values"; a nil v is
// stored as nil Values, not as null).
func MarshalValues(v duplex.Values) (json.RawMessage, error) {
	return MarshalValue(v)
}

// UnmarshalValues returns the row whose tagged form is b: nil for a nil b
// or a null, the Values of a "values" or "map" form, and an error for any
// other value.
func UnmarshalValues(b []byte) (duplex.Values, error) {
	if b == nil {
		return nil, nil
	}
	v, err := decodeValue(b)
	if err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case duplex.Values:
		return x, nil
	case map[string]any:
		return duplex.Values(x), nil
	}
	return nil, fmt.Errorf("valuecodec: a %T, not values", v)
}

// node is one encoded value, ready for json.Marshal.
type node map[string]any

// withStr stores s in n under "v", or base64 under "b64" when not clean.
func withStr(n node, s string) node {
	if Clean(s) {
		n["v"] = s
	} else {
		n["b64"] = base64.StdEncoding.EncodeToString([]byte(s))
	}
	return n
}

// typeTags maps the types with a tag of their own (besides the
// containers) to the tag, and back.
var (
	tagTypes = map[string]reflect.Type{
		"any":    reflect.TypeFor[any](),
		"s":      reflect.TypeFor[string](),
		"bool":   reflect.TypeFor[bool](),
		"int":    reflect.TypeFor[int](),
		"int8":   reflect.TypeFor[int8](),
		"int16":  reflect.TypeFor[int16](),
		"int32":  reflect.TypeFor[int32](),
		"int64":  reflect.TypeFor[int64](),
		"uint":   reflect.TypeFor[uint](),
		"uint8":  reflect.TypeFor[uint8](),
		"uint16": reflect.TypeFor[uint16](),
		"uint32": reflect.TypeFor[uint32](),
		"uint64": reflect.TypeFor[uint64](),
		"f32":    reflect.TypeFor[float32](),
		"f64":    reflect.TypeFor[float64](),
		"bytes":  reflect.TypeFor[[]byte](),
		"time":   reflect.TypeFor[time.Time](),
		"json":   reflect.TypeFor[json.RawMessage](),
		"jsonb":  reflect.TypeFor[duplex.JSONB](),
		"bigint": reflect.TypeFor[*big.Int](),
		"list":   reflect.TypeFor[[]any](),
		"map":    reflect.TypeFor[map[string]any](),
		"values": reflect.TypeFor[duplex.Values](),
	}
	typeTags = func() map[reflect.Type]string {
		m := make(map[reflect.Type]string, len(tagTypes))
		for tag, typ := range tagTypes {
			m[typ] = tag
		}
		return m
	}()
)

// encodeValue returns the tagged form of x. It never fails: a value of a
// type it does not know is stored as "opaque".
func encodeValue(x any) node {
	switch v := x.(type) {
	case nil:
		return node{"t": "null"}
	case string:
		return withStr(node{"t": "s"}, v)
	case bool:
		return node{"t": "bool", "v": v}
	case int:
		return node{"t": "int", "v": strconv.FormatInt(int64(v), 10)}
	case int8:
		return node{"t": "int8", "v": strconv.FormatInt(int64(v), 10)}
	case int16:
		return node{"t": "int16", "v": strconv.FormatInt(int64(v), 10)}
	case int32:
		return node{"t": "int32", "v": strconv.FormatInt(int64(v), 10)}
	case int64:
		return node{"t": "int64", "v": strconv.FormatInt(v, 10)}
	case uint:
		return node{"t": "uint", "v": strconv.FormatUint(uint64(v), 10)}
	case uint8:
		return node{"t": "uint8", "v": strconv.FormatUint(uint64(v), 10)}
	case uint16:
		return node{"t": "uint16", "v": strconv.FormatUint(uint64(v), 10)}
	case uint32:
		return node{"t": "uint32", "v": strconv.FormatUint(uint64(v), 10)}
	case uint64:
		return node{"t": "uint64", "v": strconv.FormatUint(v, 10)}
	case float32:
		return node{"t": "f32", "v": strconv.FormatFloat(float64(v), 'g', -1, 32)}
	case float64:
		return node{"t": "f64", "v": strconv.FormatFloat(v, 'g', -1, 64)}
	case []byte:
		n := node{"t": "bytes"}
		if v != nil {
			n["v"] = base64.StdEncoding.EncodeToString(v)
		}
		return n
	case json.RawMessage:
		n := node{"t": "json"}
		if v != nil {
			withStr(n, string(v))
		}
		return n
	case duplex.JSONB:
		n := node{"t": "jsonb"}
		if v != nil {
			withStr(n, string(v))
		}
		return n
	case time.Time:
		return encodeTime(v)
	case *big.Int:
		n := node{"t": "bigint"}
		if v != nil {
			n["v"] = v.String()
		}
		return n
	case []any:
		n := node{"t": "list"}
		if v != nil {
			l := make([]node, len(v))
			for i, e := range v {
				l[i] = encodeValue(e)
			}
			n["v"] = l
		}
		return n
	case map[string]any:
		return encodeMap(node{"t": "map"}, reflect.ValueOf(v))
	case duplex.Values:
		return encodeMap(node{"t": "values"}, reflect.ValueOf(v))
	}
	rv := reflect.ValueOf(x)
	t := rv.Type()
	switch {
	case t.Kind() == reflect.Slice && t == reflect.SliceOf(t.Elem()) && typeTags[t.Elem()] != "":
		n := node{"t": "slice", "e": typeTags[t.Elem()]}
		if !rv.IsNil() {
			l := make([]node, rv.Len())
			for i := range l {
				l[i] = encodeValue(rv.Index(i).Interface())
			}
			n["v"] = l
		}
		return n
	case t.Kind() == reflect.Map && t.Key() == reflect.TypeFor[string]() &&
		t == reflect.MapOf(t.Key(), t.Elem()) && typeTags[t.Elem()] != "":
		return encodeMap(node{"t": "mapof", "e": typeTags[t.Elem()]}, rv)
	}
	return encodeOpaque(x)
}

// encodeMap stores the map m (string keys) in n: "v" as an object when
// every key is clean, else "kv" as [key, value] pairs sorted by key.
func encodeMap(n node, m reflect.Value) node {
	if m.IsNil() {
		return n
	}
	keys := make([]string, 0, m.Len())
	allClean := true
	for it := m.MapRange(); it.Next(); {
		k := it.Key().String()
		keys = append(keys, k)
		allClean = allClean && Clean(k)
	}
	if allClean {
		obj := make(map[string]node, len(keys))
		for _, k := range keys {
			obj[k] = encodeValue(m.MapIndex(reflect.ValueOf(k).Convert(m.Type().Key())).Interface())
		}
		n["v"] = obj
		return n
	}
	slices.Sort(keys)
	kv := make([][2]node, len(keys))
	for i, k := range keys {
		kv[i] = [2]node{encodeValue(k), encodeValue(m.MapIndex(reflect.ValueOf(k).Convert(m.Type().Key())).Interface())}
	}
	n["kv"] = kv
	return n
}

func encodeTime(t time.Time) node {
	_, offset := t.Zone()
	if y := t.Year(); y >= 0 && y <= 9999 && offset%60 == 0 {
		return node{"t": "time", "v": t.Format(time.RFC3339Nano)}
	}
	b, err := t.MarshalBinary()
	if err != nil { // an offset MarshalBinary cannot hold: keep the instant
		b, _ = t.UTC().MarshalBinary()
	}
	return node{"t": "time", "bin": base64.StdEncoding.EncodeToString(b)}
}

func encodeOpaque(x any) node {
	n := node{"t": "opaque", "go": fmt.Sprintf("%T", x)}
	b, err := json.Marshal(x)
	// jsonb rejects \u0000; encoding/json writes invalid UTF-8 as U+FFFD.
	if err != nil || bytes.Contains(b, []byte(`\u0000`)) {
		return withText(n, fmt.Sprint(x))
	}
	n["v"] = json.RawMessage(b)
	return n
}

func withText(n node, s string) node {
	if Clean(s) {
		n["text"] = s
	} else {
		n["b64"] = base64.StdEncoding.EncodeToString([]byte(s))
	}
	return n
}

// rawNode is an encoded value as read back.
type rawNode struct {
	T    string               `json:"t"`
	V    json.RawMessage      `json:"v"`
	B64  *string              `json:"b64"`
	Bin  string               `json:"bin"`
	E    string               `json:"e"`
	KV   [][2]json.RawMessage `json:"kv"`
	Go   string               `json:"go"`
	Text *string              `json:"text"`
}

// has reports whether the node holds a value ("v", "b64", "kv"), as
// opposed to a nil of its type.
func (n *rawNode) has() bool { return n.V != nil || n.B64 != nil || n.KV != nil }

// str returns the string in "v" or "b64".
func (n *rawNode) str() (string, error) {
	if n.B64 != nil {
		b, err := base64.StdEncoding.DecodeString(*n.B64)
		return string(b), err
	}
	var s string
	err := json.Unmarshal(n.V, &s)
	return s, err
}

// decodeValue returns the value whose tagged form is b.
func decodeValue(b []byte) (any, error) {
	var n rawNode
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("valuecodec: decode value: %w", err)
	}
	v, err := n.decode()
	if err != nil {
		return nil, fmt.Errorf("valuecodec: decode %q value: %w", n.T, err)
	}
	return v, nil
}

func (n *rawNode) decode() (any, error) {
	switch n.T {
	case "null":
		return nil, nil
	case "s":
		return n.str()
	case "bool":
		var v bool
		err := json.Unmarshal(n.V, &v)
		return v, err
	case "int", "int8", "int16", "int32", "int64":
		s, err := n.str()
		if err != nil {
			return nil, err
		}
		typ := tagTypes[n.T]
		i, err := strconv.ParseInt(s, 10, typ.Bits())
		if err != nil {
			return nil, err
		}
		return reflect.ValueOf(i).Convert(typ).Interface(), nil
	case "uint", "uint8", "uint16", "uint32", "uint64":
		s, err := n.str()
		if err != nil {
			return nil, err
		}
		typ := tagTypes[n.T]
		u, err := strconv.ParseUint(s, 10, typ.Bits())
		if err != nil {
			return nil, err
		}
		return reflect.ValueOf(u).Convert(typ).Interface(), nil
	case "f32", "f64":
		s, err := n.str()
		if err != nil {
			return nil, err
		}
		if n.T == "f32" {
			f, err := strconv.ParseFloat(s, 32)
			return float32(f), err
		}
		return strconv.ParseFloat(s, 64)
	case "bytes":
		if !n.has() {
			return []byte(nil), nil
		}
		s, err := n.str()
		if err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if b == nil {
			b = []byte{}
		}
		return b, err
	case "json":
		if !n.has() {
			return json.RawMessage(nil), nil
		}
		s, err := n.str()
		return json.RawMessage(s), err
	case "jsonb":
		if !n.has() {
			return duplex.JSONB(nil), nil
		}
		s, err := n.str()
		return duplex.JSONB(s), err
	case "time":
		return n.decodeTime()
	case "bigint":
		if !n.has() {
			return (*big.Int)(nil), nil
		}
		s, err := n.str()
		if err != nil {
			return nil, err
		}
		i, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return nil, fmt.Errorf("bad integer %q", s)
		}
		return i, nil
	case "list":
		return n.decodeSlice(tagTypes["list"])
	case "map", "values":
		return n.decodeMap(tagTypes[n.T])
	case "slice", "mapof":
		elem, ok := tagTypes[n.E]
		if !ok {
			return nil, fmt.Errorf("unknown element type %q", n.E)
		}
		if n.T == "slice" {
			return n.decodeSlice(reflect.SliceOf(elem))
		}
		return n.decodeMap(reflect.MapOf(reflect.TypeFor[string](), elem))
	case "opaque":
		if n.V == nil {
			if n.Text != nil {
				return *n.Text, nil
			}
			return n.str()
		}
		return decodeJSON(n.V)
	}
	return nil, fmt.Errorf("unknown type tag %q", n.T)
}

func (n *rawNode) decodeTime() (any, error) {
	if n.Bin != "" {
		b, err := base64.StdEncoding.DecodeString(n.Bin)
		if err != nil {
			return nil, err
		}
		var t time.Time
		err = t.UnmarshalBinary(b)
		return t, err
	}
	s, err := n.str()
	if err != nil {
		return nil, err
	}
	return time.Parse(time.RFC3339Nano, s)
}

// elemValue returns the reflect.Value of the element whose tagged form is
// b, of type typ.
func elemValue(b []byte, typ reflect.Type) (reflect.Value, error) {
	v, err := decodeValue(b)
	if err != nil {
		return reflect.Value{}, err
	}
	if v == nil {
		if typ.Kind() != reflect.Interface {
			return reflect.Value{}, fmt.Errorf("null element in %s", typ)
		}
		return reflect.Zero(typ), nil
	}
	rv := reflect.ValueOf(v)
	if !rv.Type().AssignableTo(typ) {
		return reflect.Value{}, fmt.Errorf("%T element in %s", v, typ)
	}
	return rv, nil
}

func (n *rawNode) decodeSlice(typ reflect.Type) (any, error) {
	if !n.has() {
		return reflect.Zero(typ).Interface(), nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(n.V, &elems); err != nil {
		return nil, err
	}
	out := reflect.MakeSlice(typ, len(elems), len(elems))
	for i, e := range elems {
		v, err := elemValue(e, typ.Elem())
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out.Index(i).Set(v)
	}
	return out.Interface(), nil
}

func (n *rawNode) decodeMap(typ reflect.Type) (any, error) {
	if !n.has() {
		return reflect.Zero(typ).Interface(), nil
	}
	out := reflect.MakeMap(typ)
	set := func(k string, b []byte) error {
		v, err := elemValue(b, typ.Elem())
		if err != nil {
			return fmt.Errorf("%q: %w", k, err)
		}
		out.SetMapIndex(reflect.ValueOf(k), v)
		return nil
	}
	if n.KV != nil {
		for _, kv := range n.KV {
			k, err := decodeValue(kv[0])
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("%T map key", k)
			}
			if err := set(ks, kv[1]); err != nil {
				return nil, err
			}
		}
		return out.Interface(), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(n.V, &obj); err != nil {
		return nil, err
	}
	for k, b := range obj {
		if err := set(k, b); err != nil {
			return nil, err
		}
	}
	return out.Interface(), nil
}

// decodeJSON decodes generic JSON, numbers as int64 when they are integers
// that fit, else float64.
func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = numbers(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = numbers(x[k])
		}
	}
	return v
}
