package dlq

import (
	"bytes"
	"encoding/json"
	"math/big"
	"reflect"
	"slices"

	"github.com/duplexsync/duplex"
)

// copyDeadLetter returns a deep copy of l, so a store never shares memory
// with the Pipeline (which may reuse it) or with its callers.
func copyDeadLetter(l *duplex.DeadLetter) duplex.DeadLetter {
	c := *l
	c.Change = copyChange(&l.Change)
	if l.Conflict != nil {
		ci := *l.Conflict
		ci.Fields = slices.Clone(ci.Fields)
		ci.Source = copyValues(ci.Source)
		ci.Target = copyValues(ci.Target)
		ci.Base = copyValues(ci.Base)
		if u := ci.Unique; u != nil {
			cu := *u
			cu.Columns = slices.Clone(u.Columns)
			cu.Values = copyValues(u.Values)
			cu.HolderKey = copyKey(u.HolderKey)
			ci.Unique = &cu
		}
		c.Conflict = &ci
	}
	return c
}

func copyChange(ch *duplex.Change) duplex.Change {
	c := *ch
	c.Key = copyKey(ch.Key)
	c.Before = copyValues(ch.Before)
	c.After = copyValues(ch.After)
	c.Unchanged = slices.Clone(ch.Unchanged)
	return c
}

func copyKey(k duplex.Key) duplex.Key {
	if k == nil {
		return nil
	}
	out := make(duplex.Key, len(k))
	for i, col := range k {
		out[i] = duplex.Column{Name: col.Name, Value: copyValue(col.Value)}
	}
	return out
}

func copyValues(v duplex.Values) duplex.Values {
	if v == nil {
		return nil
	}
	out := make(duplex.Values, len(v))
	for k, x := range v {
		out[k] = copyValue(x)
	}
	return out
}

// copyValue deep-copies the value shapes sources produce: byte slices,
// JSON, nested maps and slices of any type. Pointers other than *big.Int
// are shared.
func copyValue(x any) any {
	switch v := x.(type) {
	case nil, string, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return v
	case []byte:
		return bytes.Clone(v)
	case json.RawMessage:
		return json.RawMessage(bytes.Clone(v))
	case duplex.JSONB:
		return duplex.JSONB(bytes.Clone(v))
	case duplex.Values:
		return copyValues(v)
	case map[string]any:
		if v == nil {
			return v
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = copyValue(e)
		}
		return out
	case []any:
		if v == nil {
			return v
		}
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = copyValue(e)
		}
		return out
	case *big.Int:
		if v == nil {
			return v
		}
		return new(big.Int).Set(v)
	}
	return copyReflect(reflect.ValueOf(x)).Interface()
}

func copyReflect(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			out.Index(i).Set(copyElem(v.Index(i)))
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			out.SetMapIndex(it.Key(), copyElem(it.Value()))
		}
		return out
	}
	return v
}

// copyElem copies an element of a slice or map, whose static type may be
// an interface.
func copyElem(e reflect.Value) reflect.Value {
	if e.Kind() == reflect.Interface {
		if e.IsNil() {
			return e
		}
		c := reflect.ValueOf(copyValue(e.Interface()))
		out := reflect.New(e.Type()).Elem()
		out.Set(c)
		return out
	}
	return copyReflect(e)
}
