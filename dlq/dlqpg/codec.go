package dlqpg

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
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

// The payload codec stores a duplex.Change (and a duplex.ConflictInfo) as
// jsonb without losing the Go types of its values, which plain
// encoding/json would (int64 -> float64, []byte -> string, time.Time ->
// string, nil map vs empty map...).
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
// replaces invalid UTF-8, so a string (or []byte text) that is not clean is
// stored as {"b64":"..."} in place of "v" (and a map with such a key as
// "kv": [[key, value], ...] in place of "v"). The envelope's own strings
// (change ID, position, ...) are plain JSON strings, or {"b64":"..."}
// likewise.

// clean reports whether s can be stored as a jsonb string exactly.
func clean(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// node is one encoded value, ready for json.Marshal.
type node map[string]any

// withStr stores s in n under "v", or base64 under "b64" when not clean.
func withStr(n node, s string) node {
	if clean(s) {
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
		allClean = allClean && clean(k)
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
	if clean(s) {
		n["text"] = s
	} else {
		n["b64"] = base64.StdEncoding.EncodeToString([]byte(s))
	}
	return n
}

// marshalValue returns the JSON of x's tagged form.
func marshalValue(x any) (json.RawMessage, error) {
	return json.Marshal(encodeValue(x))
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
		return nil, fmt.Errorf("dlqpg: decode value: %w", err)
	}
	v, err := n.decode()
	if err != nil {
		return nil, fmt.Errorf("dlqpg: decode %q value: %w", n.T, err)
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

// jstr is a string of the envelope: a JSON string, or {"b64":"..."} when
// jsonb cannot hold it exactly.
type jstr string

func (s jstr) MarshalJSON() ([]byte, error) {
	if clean(string(s)) {
		return json.Marshal(string(s))
	}
	return json.Marshal(map[string]string{"b64": base64.StdEncoding.EncodeToString([]byte(s))})
}

func (s *jstr) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var x string
		err := json.Unmarshal(b, &x)
		*s = jstr(x)
		return err
	}
	var o struct {
		B64 string `json:"b64"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	x, err := base64.StdEncoding.DecodeString(o.B64)
	*s = jstr(x)
	return err
}

func jstrs(ss []string) []jstr {
	if ss == nil {
		return nil
	}
	out := make([]jstr, len(ss))
	for i, s := range ss {
		out[i] = jstr(s)
	}
	return out
}

func strs(js []jstr) []string {
	if js == nil {
		return nil
	}
	out := make([]string, len(js))
	for i, s := range js {
		out[i] = string(s)
	}
	return out
}

// enumDoc stores a duplex.Op or duplex.ConflictKind by name when it has
// one, else by number.
type enumDoc[T interface {
	~uint8
	String() string
}] struct{ v T }

// MarshalJSON writes the enum by name when the name reads back as the same
// value, else by number.
func (e enumDoc[T]) MarshalJSON() ([]byte, error) {
	// By name only when the name reads back as the same value.
	var back T
	if u, ok := any(&back).(textUnmarshaler); ok && u.UnmarshalText([]byte(e.v.String())) == nil && back == e.v {
		return json.Marshal(e.v.String())
	}
	return json.Marshal(uint8(e.v))
}

type textUnmarshaler interface{ UnmarshalText([]byte) error }

// UnmarshalJSON reads what MarshalJSON wrote.
func (e *enumDoc[T]) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		u, ok := any(&e.v).(textUnmarshaler)
		if !ok {
			return fmt.Errorf("%T has no names", e.v)
		}
		return u.UnmarshalText([]byte(s))
	}
	var n uint8
	err := json.Unmarshal(b, &n)
	e.v = T(n)
	return err
}

// columnDoc is a key column.
type columnDoc struct {
	Name  jstr            `json:"name"`
	Value json.RawMessage `json:"value"`
}

type tableDoc struct {
	Schema jstr `json:"schema"`
	Name   jstr `json:"name"`
}

// changeDoc is the payload: a duplex.Change.
type changeDoc struct {
	ID         jstr               `json:"id"`
	Source     jstr               `json:"source"`
	Table      tableDoc           `json:"table"`
	Key        []columnDoc        `json:"key"`
	Op         enumDoc[duplex.Op] `json:"op"`
	Before     json.RawMessage    `json:"before"`
	After      json.RawMessage    `json:"after"`
	Unchanged  []jstr             `json:"unchanged"`
	CommitTime json.RawMessage    `json:"commit_time"`
	Position   jstr               `json:"position"`
	Origin     jstr               `json:"origin"`
}

// conflictDoc is the conflict column: a duplex.ConflictInfo.
type conflictDoc struct {
	Kind      enumDoc[duplex.ConflictKind] `json:"kind"`
	Fields    []jstr                       `json:"fields"`
	Source    json.RawMessage              `json:"source"`
	Target    json.RawMessage              `json:"target"`
	DecidedBy jstr                         `json:"decided_by"`
}

func encodeChange(c *duplex.Change) ([]byte, error) {
	d := changeDoc{
		ID:        jstr(c.ID),
		Source:    jstr(c.Source),
		Table:     tableDoc{Schema: jstr(c.Table.Schema), Name: jstr(c.Table.Name)},
		Op:        enumDoc[duplex.Op]{c.Op},
		Unchanged: jstrs(c.Unchanged),
		Position:  jstr(c.Position),
		Origin:    jstr(c.Origin),
	}
	var err error
	if c.Key != nil {
		d.Key = make([]columnDoc, len(c.Key))
		for i, col := range c.Key {
			d.Key[i].Name = jstr(col.Name)
			if d.Key[i].Value, err = marshalValue(col.Value); err != nil {
				return nil, err
			}
		}
	}
	if d.Before, err = marshalValue(c.Before); err != nil {
		return nil, err
	}
	if d.After, err = marshalValue(c.After); err != nil {
		return nil, err
	}
	if d.CommitTime, err = marshalValue(c.CommitTime); err != nil {
		return nil, err
	}
	return json.Marshal(d)
}

func decodeChange(b []byte) (duplex.Change, error) {
	var d changeDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return duplex.Change{}, fmt.Errorf("dlqpg: decode payload: %w", err)
	}
	c := duplex.Change{
		ID:        string(d.ID),
		Source:    string(d.Source),
		Table:     duplex.Table{Schema: string(d.Table.Schema), Name: string(d.Table.Name)},
		Op:        d.Op.v,
		Unchanged: strs(d.Unchanged),
		Position:  duplex.Position(d.Position),
		Origin:    string(d.Origin),
	}
	if d.Key != nil {
		c.Key = make(duplex.Key, len(d.Key))
		for i, col := range d.Key {
			v, err := decodeValue(col.Value)
			if err != nil {
				return duplex.Change{}, fmt.Errorf("dlqpg: key column %q: %w", col.Name, err)
			}
			c.Key[i] = duplex.Column{Name: string(col.Name), Value: v}
		}
	}
	var err error
	if c.Before, err = decodeValues(d.Before, "before"); err != nil {
		return duplex.Change{}, err
	}
	if c.After, err = decodeValues(d.After, "after"); err != nil {
		return duplex.Change{}, err
	}
	ct, err := decodeValue(d.CommitTime)
	if err != nil {
		return duplex.Change{}, fmt.Errorf("dlqpg: commit time: %w", err)
	}
	switch t := ct.(type) {
	case time.Time:
		c.CommitTime = t
	case nil:
	default:
		return duplex.Change{}, fmt.Errorf("dlqpg: commit time is a %T", ct)
	}
	return c, nil
}

func decodeValues(b []byte, what string) (duplex.Values, error) {
	if b == nil {
		return nil, nil
	}
	v, err := decodeValue(b)
	if err != nil {
		return nil, fmt.Errorf("dlqpg: %s: %w", what, err)
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case duplex.Values:
		return x, nil
	case map[string]any:
		return duplex.Values(x), nil
	}
	return nil, fmt.Errorf("dlqpg: %s is a %T, not values", what, v)
}

func encodeConflict(ci *duplex.ConflictInfo) ([]byte, error) {
	if ci == nil {
		return nil, nil
	}
	d := conflictDoc{
		Kind:      enumDoc[duplex.ConflictKind]{ci.Kind},
		Fields:    jstrs(ci.Fields),
		DecidedBy: jstr(ci.DecidedBy),
	}
	var err error
	if d.Source, err = marshalValue(ci.Source); err != nil {
		return nil, err
	}
	if d.Target, err = marshalValue(ci.Target); err != nil {
		return nil, err
	}
	return json.Marshal(d)
}

func decodeConflict(b []byte) (*duplex.ConflictInfo, error) {
	if b == nil {
		return nil, nil
	}
	var d conflictDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("dlqpg: decode conflict: %w", err)
	}
	ci := &duplex.ConflictInfo{Kind: d.Kind.v, Fields: strs(d.Fields), DecidedBy: string(d.DecidedBy)}
	var err error
	if ci.Source, err = decodeValues(d.Source, "conflict source"); err != nil {
		return nil, err
	}
	if ci.Target, err = decodeValues(d.Target, "conflict target"); err != nil {
		return nil, err
	}
	return ci, nil
}

var errNilLetter = errors.New("dlqpg: Put of a nil dead letter")
