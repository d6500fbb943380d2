package resolvetest

import (
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

var timeType = reflect.TypeFor[time.Time]()

// snapshot renders v deeply as text: through pointers, interfaces, maps
// (sorted), slices and struct fields, exported or not; floats by their
// bits, so that NaN equals itself. Two snapshots of the same value are
// equal, and a change anywhere inside v changes its snapshot.
func snapshot(v any) string {
	var b strings.Builder
	writeValue(&b, reflect.ValueOf(v), 0)
	return b.String()
}

func writeValue(b *strings.Builder, v reflect.Value, depth int) {
	if depth > 32 {
		b.WriteString("...")
		return
	}
	if !v.IsValid() {
		b.WriteString("nil")
		return
	}
	if v.Type() == timeType && v.CanInterface() {
		t := v.Interface().(time.Time)
		b.WriteString("time(" + t.Format(time.RFC3339Nano) + " " + t.Location().String() + ")")
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("nil")
			return
		}
		b.WriteString(v.Elem().Type().String() + "&")
		writeValue(b, v.Elem(), depth+1)
	case reflect.Map:
		if v.IsNil() {
			b.WriteString("map(nil)")
			return
		}
		entries := make([]string, 0, v.Len())
		for it := v.MapRange(); it.Next(); {
			var e strings.Builder
			writeValue(&e, it.Key(), depth+1)
			e.WriteString(": ")
			writeValue(&e, it.Value(), depth+1)
			entries = append(entries, e.String())
		}
		slices.Sort(entries)
		b.WriteString("map{" + strings.Join(entries, ", ") + "}")
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			b.WriteString("[](nil)")
			return
		}
		b.WriteString("[")
		for i := range v.Len() {
			if i > 0 {
				b.WriteString(", ")
			}
			writeValue(b, v.Index(i), depth+1)
		}
		b.WriteString("]")
	case reflect.Struct:
		b.WriteString(v.Type().String() + "{")
		for i := range v.NumField() {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(v.Type().Field(i).Name + ": ")
			writeValue(b, v.Field(i), depth+1)
		}
		b.WriteString("}")
	case reflect.Float32, reflect.Float64:
		b.WriteString("float(" + strconv.FormatUint(math.Float64bits(v.Float()), 16) + ")")
	case reflect.Complex64, reflect.Complex128:
		c := v.Complex()
		b.WriteString("complex(" + strconv.FormatUint(math.Float64bits(real(c)), 16) + "," + strconv.FormatUint(math.Float64bits(imag(c)), 16) + ")")
	case reflect.String:
		b.WriteString(strconv.Quote(v.String()))
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	default: // funcs, channels, unsafe pointers: their identity
		b.WriteString(v.Kind().String() + "(" + strconv.FormatUint(uint64(v.Pointer()), 16) + ")")
	}
}
