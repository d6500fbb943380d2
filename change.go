// The change model: Change, Table, Key, Values, Position, Direction, and value equality.

package duplex

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Op is the kind of row change.
type Op uint8

// The operations a Change can carry.
const (
	OpInsert Op = iota + 1
	OpUpdate
	OpDelete
	// OpTruncate empties a whole table (Key, Before and After are nil). The
	// Pipeline dead-letters it unless Options.PropagateTruncate is set and
	// the Applier is a Truncater.
	OpTruncate
)

// String returns "insert", "update" or "delete".
func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpTruncate:
		return "truncate"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText implements encoding.TextMarshaler so DLQ payloads read "update", not 2.
func (o Op) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (o *Op) UnmarshalText(b []byte) error {
	switch string(b) {
	case "insert":
		*o = OpInsert
	case "update":
		*o = OpUpdate
	case "delete":
		*o = OpDelete
	case "truncate":
		*o = OpTruncate
	default:
		return fmt.Errorf("duplex: unknown op %q", b)
	}
	return nil
}

// Table is a schema-qualified table name.
type Table struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
}

// String returns "schema.name" ("public.customers").
func (t Table) String() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// ParseTable parses "schema.name" or "name" (schema defaults to "public").
func ParseTable(s string) (Table, error) {
	schema, name, ok := strings.Cut(s, ".")
	if !ok {
		schema, name = "public", s
	}
	if schema == "" || name == "" || strings.Contains(name, ".") {
		return Table{}, fmt.Errorf("duplex: invalid table name %q (want schema.name)", s)
	}
	return Table{Schema: schema, Name: name}, nil
}

// Column is one named value, used for ordered primary keys.
type Column struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// Key is a primary key: its columns in catalog order with their values.
type Key []Column

// String returns a canonical, unambiguous rendering of the key such as
// `id=42` or `tenant="acme",id=7`. Equal keys render equally; it is used
// to keep per-key order and in logs and errors.
func (k Key) String() string {
	var b strings.Builder
	for i, c := range k {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(c.Name)
		b.WriteByte('=')
		appendValue(&b, c.Value)
	}
	return b.String()
}

// Values returns the key as a Values map.
func (k Key) Values() Values {
	v := make(Values, len(k))
	for _, c := range k {
		v[c.Name] = c.Value
	}
	return v
}

func appendValue(b *strings.Builder, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("NULL")
	case string:
		b.WriteString(strconv.Quote(x))
	case int:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case int32:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int16:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int8:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case uint8:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint16:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint32:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint64:
		b.WriteString(strconv.FormatUint(x, 10))
	case uint:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case float32:
		b.WriteString(strconv.FormatFloat(float64(x), 'g', -1, 32))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case []byte:
		b.WriteString(`\x`)
		b.WriteString(fmt.Sprintf("%x", x))
	case time.Time:
		b.WriteString(x.UTC().Format(time.RFC3339Nano))
	case fmt.Stringer:
		b.WriteString(strconv.Quote(x.String()))
	default:
		b.WriteString(strconv.Quote(fmt.Sprint(x)))
	}
}

// Values holds field values of a row by column name. Values are the Go
// values a source decoded (string, int64, float64, bool, []byte, time.Time,
// json.RawMessage for json, [JSONB] for jsonb, nested slices, ...). A
// column absent from the map is unknown, which is different from a column
// present with a nil value (NULL).
type Values map[string]any

// Clone returns a shallow copy.
func (v Values) Clone() Values {
	if v == nil {
		return nil
	}
	c := make(Values, len(v))
	for k, x := range v {
		c[k] = x
	}
	return c
}

// Position is an opaque resume point defined by a ChangeSource (an LSN, a
// watermark). Positions of the changes a source delivers never decrease.
type Position string

// Change is one committed row change captured on one system. A Change is a
// plain value and is never modified after the source emits it.
type Change struct {
	// ID is stable across redeliveries (for pgoutput: slot, commit LSN and
	// ordinal in the transaction). It is the dedup key.
	ID string `json:"id"`
	// Source names the system the change was captured on ("a", "crm").
	Source string `json:"source"`
	// Table is the schema-qualified table.
	Table Table `json:"table"`
	// Key is the primary key, columns in catalog order.
	Key Key `json:"key"`
	// Op is insert, update or delete.
	Op Op `json:"op"`
	// Before is the row before the change; nil when the source has no before
	// image (polling, REPLICA IDENTITY DEFAULT) and for inserts.
	Before Values `json:"before,omitempty"`
	// After is the row after the change; nil for deletes.
	After Values `json:"after,omitempty"`
	// Unchanged lists columns the source did not send (unchanged TOAST
	// values). They are unknown, not NULL, and are never written.
	Unchanged []string `json:"unchanged,omitempty"`
	// CommitTime is the commit timestamp on the source.
	CommitTime time.Time `json:"commit_time"`
	// Position is the source's resume position for this change. Acknowledging
	// it means this change and every change delivered before it are settled.
	Position Position `json:"position"`
	// Origin is the replication origin of the transaction that made the
	// change ("" when none); the loop guard uses it to drop the sync's own
	// writes.
	Origin string `json:"origin,omitempty"`
	// MovedTo and MovedFrom describe an update of the primary key (a move):
	// the source delivers it as a delete of the old key carrying MovedTo
	// (the new key), followed at once by an insert of the new key carrying
	// MovedFrom (the old key). A two-way merge deletes the old key only if
	// the new key's row was written (or already there).
	MovedTo   Key `json:"moved_to,omitempty"`
	MovedFrom Key `json:"moved_from,omitempty"`
}

// IsUnchanged reports whether the source left column unsent (unchanged TOAST).
func (c *Change) IsUnchanged(column string) bool {
	for _, u := range c.Unchanged {
		if u == column {
			return true
		}
	}
	return false
}

// String identifies the change in logs and errors: "update public.customers id=42 (a:0/16B3748#3)".
func (c *Change) String() string {
	return c.Op.String() + " " + c.Table.String() + " " + c.Key.String() + " (" + c.Source + ":" + c.ID + ")"
}

// Equal reports whether two field values are equal. It understands the
// value shapes sources produce: byte slices compare by content, times by
// instant, numbers across integer widths, json.RawMessage (a json column's
// text, kept as written) byte for byte, [JSONB] by jsonb value (key order,
// whitespace and duplicate keys aside, numbers by exact value, 1.0 equal
// to 1; see [JSONB.Canonical]; also against a json.RawMessage), and
// everything else by reflect.DeepEqual. JSON text that does not parse
// equals only the same bytes.
func Equal(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case string:
		y, ok := b.(string)
		return ok && x == y
	case int64:
		if y, ok := asInt64(b); ok {
			return x == y
		}
		return false
	case int, int32, int16, int8, uint32, uint16, uint8:
		xi, _ := asInt64(a)
		if y, ok := asInt64(b); ok {
			return xi == y
		}
		return false
	case uint64:
		if y, ok := b.(uint64); ok {
			return x == y
		}
		if y, ok := asInt64(b); ok {
			return y >= 0 && uint64(y) == x
		}
		return false
	case Values:
		y, ok := b.(Values)
		if !ok {
			if m, isMap := b.(map[string]any); isMap {
				y, ok = Values(m), true
			}
		}
		return ok && valuesEqual(x, y)
	case map[string]any:
		return Equal(Values(x), b)
	case []any:
		y, ok := b.([]any)
		return ok && slices.EqualFunc(x, y, Equal)
	case float64:
		y, ok := b.(float64)
		return ok && (x == y || (x != x && y != y))
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y)
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case json.RawMessage:
		return equalJSON(x, false, b)
	case JSONB:
		return equalJSON(x, true, b)
	case *big.Int:
		y, ok := b.(*big.Int)
		return ok && x.Cmp(y) == 0
	}
	if b == nil {
		return false
	}
	return reflect.DeepEqual(a, b)
}

// equalJSON compares the JSON document x (jsonb: a JSONB, compared by
// value, else compared as text) with b, a json.RawMessage or JSONB (JSONB:
// by value).
func equalJSON(x []byte, jsonb bool, b any) bool {
	switch y := b.(type) {
	case json.RawMessage:
		return jsonEqual(x, y, jsonb)
	case JSONB:
		return jsonEqual(x, y, true)
	}
	return false
}

func valuesEqual(a, b Values) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !Equal(v, w) {
			return false
		}
	}
	return true
}

func asInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case int16:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint8:
		return int64(x), true
	}
	return 0, false
}

// Direction names the flow of changes between two systems, such as a -> b.
type Direction struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// String returns the metric label form "a_to_b".
func (d Direction) String() string { return d.From + "_to_" + d.To }

// Reverse returns the opposite direction.
func (d Direction) Reverse() Direction { return Direction{From: d.To, To: d.From} }

// Clone returns a deep copy of c (its key, images and unchanged list).
func (c *Change) Clone() *Change {
	d := *c
	d.Key = slices.Clone(c.Key)
	d.Before = c.Before.Clone()
	d.After = c.After.Clone()
	d.Unchanged = slices.Clone(c.Unchanged)
	d.MovedTo, d.MovedFrom = slices.Clone(c.MovedTo), slices.Clone(c.MovedFrom)
	return &d
}
