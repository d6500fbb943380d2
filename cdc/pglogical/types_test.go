package pglogical_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// typeCol is a column of the types table. wellKnown says the source decodes
// it to a plain Go value; the others keep PostgreSQL's text form.
type typeCol struct {
	name, typ string
	wellKnown bool
}

var typeCols = []typeCol{
	{"i2", "smallint", true},
	{"i4", "integer", true},
	{"i8", "bigint", true},
	{"num", "numeric", false},
	{"num_s", "numeric(12,4)", false},
	{"f4", "real", true},
	{"f8", "double precision", true},
	{"b", "boolean", true},
	{"t", "text", true},
	{"t_long", "text", true},
	{"vc", "varchar(10)", true},
	{"ch", "char(5)", true},
	{"by", "bytea", true},
	{"d", "date", true},
	{"ts", "timestamp", true},
	{"tstz", "timestamptz", true},
	{"tm", "time", false},
	{"tmtz", "timetz", false},
	{"iv", "interval", false},
	{"u", "uuid", false},
	{"j", "json", true},
	{"jb", "jsonb", true},
	{"ta", "text[]", true},
	{"vca", "varchar(5)[]", true},
	{"ia", "int[]", false},
	{"e", "mood", false},
	{"dom", "posint", true}, // decoded like its base type
	{"ip", "inet", false},
	{"cidr", "cidr", false},
	{"m", "money", false},
	{"vb", "bit varying", false},
	{"tsv", "tsvector", false},
}

// typeRow is one row of the types table: SQL expressions for the columns it
// sets (the others are NULL) and the Go values expected for the well-known
// types. Text-form columns are compared with the column's ::text; want may
// pin some of them too.
type typeRow struct {
	id   int64
	sql  map[string]string
	args []any // $1, $2, ... used by sql
	want duplex.Values
}

func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// longText returns a 1 MB string with multi-byte characters that does not
// compress (so it is stored out of line, TOASTed).
func longText(seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 1))
	alphabet := []rune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 'éßø日本語🎉\"\\,{}")
	var b strings.Builder
	for b.Len() < 1<<20 {
		b.WriteRune(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

func longBytes(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func typeRows() []typeRow {
	long1, long2 := longText(1), longText(2)
	bin := longBytes(3)
	return []typeRow{
		{id: 1, sql: map[string]string{ // minimums and empties
			"i2": "-32768", "i4": "-2147483648", "i8": "-9223372036854775808",
			"num": "'-1234567890123456789012345678901234567890'", "num_s": "'-99999999.9999'",
			"f4": "'-Infinity'", "f8": "'-Infinity'", "b": "false", "t": "''", "t_long": "$1",
			"vc": "''", "ch": "''", "by": `''::bytea`, "d": "'0001-01-01'", "ts": "'0001-01-01 00:00:00'",
			"tstz": "'0001-01-01 00:00:00+00'", "tm": "'00:00:00'", "tmtz": "'00:00:00+15:59'",
			"iv": "'-178000000 years'", "u": "'00000000-0000-0000-0000-000000000000'",
			"j": `'{"a":1,  "a" : 2 }'`, "jb": `'{"a":1,"a":2}'`, "ta": "'{}'", "vca": "'{}'", "ia": "'{}'",
			"e": "'sad'", "dom": "1", "ip": "'0.0.0.0/0'", "cidr": "'0.0.0.0/0'",
			"m": "'-92233720368547758.08'", "vb": "B''", "tsv": "''",
		}, args: []any{long1}, want: duplex.Values{
			"i2": int64(-32768), "i4": int64(-2147483648), "i8": int64(math.MinInt64),
			"num": "-1234567890123456789012345678901234567890", "num_s": "-99999999.9999",
			"f4": math.Inf(-1), "f8": math.Inf(-1), "b": false, "t": "", "t_long": long1,
			"vc": "", "ch": "     ", "by": []byte{}, "d": date(1, 1, 1), "ts": date(1, 1, 1),
			"tstz": date(1, 1, 1), "tm": "00:00:00", "tmtz": "00:00:00+15:59", "iv": "-178000000 years",
			"u": "00000000-0000-0000-0000-000000000000",
			"j": json.RawMessage(`{"a":1,  "a" : 2 }`), "jb": duplex.JSONB(`{"a": 2}`),
			"ta": []string{}, "vca": []string{}, "ia": "{}", "e": "sad", "dom": int64(1),
			"m": "-$92,233,720,368,547,758.08", "vb": "", "tsv": "",
		}},
		{id: 2, sql: map[string]string{ // maximums and unicode
			"i2": "32767", "i4": "2147483647", "i8": "9223372036854775807",
			"num": "'1234567890123456789012345678901234567890'", "num_s": "'99999999.9999'",
			"f4": "'3.4028235e+38'", "f8": "'1.7976931348623157e+308'", "b": "true",
			"t": "'héllo wörld — 日本語 🎉 \u0001'", "vc": "'ñññññññññ🎉'", "ch": "'ab'", "by": `'\x0000000000'::bytea`,
			"d": "'5874897-12-31'", "ts": "'294276-12-31 23:59:59.999999'", "tstz": "'294276-12-31 23:59:59.999999+00'",
			"tm": "'24:00:00'", "tmtz": "'23:59:59.999999-15:59'", "iv": "'178000000 years'",
			"u": "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "j": "'  [1, 2 ,3]  '",
			"jb": `'[1, "2", null, true, {"x": {}}]'`, "ta": `'{"a,b","c\"d","e\\f",NULL," ",""}'`,
			"vca": `'{"a b",NULL}'`, "ia": "'{{1,2},{3,4}}'", "e": "'happy'", "dom": "2147483647",
			"ip": "'2001:db8::1/64'", "cidr": "'2001:db8::/32'", "m": "'92233720368547758.07'",
			"vb": "B'1010101010101'", "tsv": "'a:1 fat:2,3 cat:4B'",
		}, want: duplex.Values{
			"i2": int64(32767), "i4": int64(2147483647), "i8": int64(math.MaxInt64),
			"num": "1234567890123456789012345678901234567890", "num_s": "99999999.9999",
			"f4": float64(math.MaxFloat32), "f8": math.MaxFloat64, "b": true, "t": "héllo wörld — 日本語 🎉 \u0001",
			"vc": "ñññññññññ🎉", "ch": "ab   ", "by": []byte{0, 0, 0, 0, 0},
			"d": date(5874897, 12, 31), "ts": time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC),
			"tstz": time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC), "tm": "24:00:00",
			"j": json.RawMessage("  [1, 2 ,3]  "), "jb": duplex.JSONB(`[1, "2", null, true, {"x": {}}]`),
			"ta": `{"a,b","c\"d","e\\f",NULL," ",""}`, "vca": `{"a b",NULL}`, "ia": "{{1,2},{3,4}}",
			"e": "happy", "dom": int64(2147483647), "ip": "2001:db8::1/64", "cidr": "2001:db8::/32",
		}},
		{id: 3, sql: map[string]string{ // specials, TOASTed values
			"i2": "0", "i4": "0", "i8": "0", "num": "'NaN'", "num_s": "'1.5'", "f4": "'-0'", "f8": "'-0'",
			"b": "true", "t": `E'it''s "quoted" \\ back\\slash\n\ttab\r'`, "t_long": "$1",
			"vc": `'a''b\c'`, "ch": "'abcde'", "by": "$2", "d": "'infinity'", "ts": "'-infinity'",
			"tstz": "'infinity'", "tm": "'12:34:56.789'", "tmtz": "'12:34:56+05:30'",
			"iv": "'1 year 2 mons 3 days 04:05:06.789'", "u": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
			"j": "'null'", "jb": `'"str"'`, "ta": "'{{a,b},{c,d}}'", "vca": `'{"NULL",x}'`, "ia": "'[0:2]={1,2,3}'",
			"e": "'ok'", "dom": "42", "ip": "'192.168.1.5/24'", "cidr": "'10.0.0.0/8'", "m": "'0'",
			"vb": "B'1'", "tsv": `$$'quoted' word$$`,
		}, args: []any{long2, bin}, want: duplex.Values{
			"i2": int64(0), "i4": int64(0), "i8": int64(0), "b": true, "num": "NaN", "num_s": "1.5000", "f4": math.Copysign(0, -1), "f8": math.Copysign(0, -1),
			"t": "it's \"quoted\" \\ back\\slash\n\ttab\r", "t_long": long2, "vc": `a'b\c`, "ch": "abcde",
			"by": bin, "d": "infinity", "ts": "-infinity", "tstz": "infinity",
			"iv": "1 year 2 mons 3 days 04:05:06.789", "j": json.RawMessage("null"), "jb": duplex.JSONB(`"str"`),
			"ta": "{{a,b},{c,d}}", "vca": []string{"NULL", "x"}, "ia": "[0:2]={1,2,3}", "dom": int64(42),
		}},
		{id: 4, sql: map[string]string{}}, // NULL in every column
		{id: 5, sql: map[string]string{ // BC dates, tiny values
			"num": "'0.000000000000000000000000000000000000000001'", "num_s": "'0.0001'",
			"f4": "'1.4e-45'", "f8": "'5e-324'", "t": "'ok'",
			"d": "'0044-03-15 BC'", "ts": "'4713-11-24 00:00:00 BC'", "tstz": "'0044-03-15 12:00:00+00 BC'",
			"ta": "'[0:1]={x,y}'", "ia": "'{1,NULL,3}'", "iv": "'-1 days +00:00:00.000001'",
			"j": `'{"nested": {"deep": [1, {"x": "\u00e9"}]}, "esc": "\"\n"}'`, "jb": `'{"b": 1, "a": [{}]}'`,
			"tmtz": "'00:00:00.000001-00:00:01'",
		}, want: duplex.Values{
			"num": "0.000000000000000000000000000000000000000001", "num_s": "0.0001",
			"f4": float64(float32(1.4e-45)), "f8": 5e-324, "t": "ok",
			"d": date(-43, 3, 15), "ts": date(-4712, 11, 24), "tstz": time.Date(-43, 3, 15, 12, 0, 0, 0, time.UTC),
			"ta": "[0:1]={x,y}", "ia": "{1,NULL,3}",
			"j":  json.RawMessage(`{"nested": {"deep": [1, {"x": "\u00e9"}]}, "esc": "\"\n"}`),
			"jb": duplex.JSONB(`{"a": [{}], "b": 1}`),
		}},
		{id: 6, sql: map[string]string{ // values whose shortest form needs every digit
			"f4": "'0.1'", "f8": "0.1::float8 + 0.2::float8", "num": "'1e-30'", "num_s": "'-0.0000'",
			"ts": "'2024-02-29 12:34:56.123456'", "tstz": "'2024-02-29 12:34:56.5-03:30'", "d": "'2024-02-29'",
			"t": "repeat('x', 3000)", "by": `'\x00ff'::bytea`, "ta": `'{"{}",NULL_,"NULL"}'`,
		}, want: duplex.Values{
			"f4": float64(float32(0.1)), "f8": 0.30000000000000004, "num": "0.000000000000000000000000000001", "num_s": "0.0000",
			"ts":   time.Date(2024, 2, 29, 12, 34, 56, 123456000, time.UTC),
			"tstz": time.Date(2024, 2, 29, 16, 4, 56, 500000000, time.UTC), "d": date(2024, 2, 29),
			"t": strings.Repeat("x", 3000), "by": []byte{0, 0xff}, "ta": []string{"{}", "NULL_", "NULL"},
		}},
	}
}

const typesSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
`

func createTypesTable(t *testing.T, e *env, name string) {
	t.Helper()
	cols := []string{"id bigint PRIMARY KEY"}
	for _, c := range typeCols {
		cols = append(cols, c.name+" "+c.typ)
	}
	e.exec("CREATE TABLE " + name + " (" + strings.Join(cols, ", ") + ")")
	// Keep the long values out of line and uncompressed: TOASTed.
	e.exec("ALTER TABLE " + name + " ALTER COLUMN t_long SET STORAGE EXTERNAL, ALTER COLUMN by SET STORAGE EXTERNAL")
}

func insertTypeRow(t *testing.T, e *env, table string, r typeRow) {
	t.Helper()
	names, vals := []string{"id"}, []string{fmt.Sprint(r.id)}
	for _, c := range typeCols {
		if v, ok := r.sql[c.name]; ok {
			names = append(names, c.name)
			vals = append(vals, v)
		}
	}
	e.exec("INSERT INTO "+table+" ("+strings.Join(names, ", ")+") VALUES ("+strings.Join(vals, ", ")+")", r.args...)
}

// outputSettings are the settings the source pins on its replication
// connection; text forms are compared under them.
const outputSettings = "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; SET bytea_output = hex"

// textForms returns the ::text of every column of the row id of table.
func textForms(t *testing.T, e *env, table string, id int64) map[string]*string {
	t.Helper()
	ctx := context.Background()
	conn, err := e.db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, outputSettings)
	require.NoError(t, err)
	sel := make([]string, len(typeCols))
	for i, c := range typeCols {
		sel[i] = c.name + "::text"
	}
	vals := make([]*string, len(typeCols))
	ptrs := make([]any, len(typeCols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	require.NoError(t, conn.QueryRow(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM "+table+" WHERE id = $1", id).Scan(ptrs...))
	out := make(map[string]*string, len(typeCols))
	for i, c := range typeCols {
		out[c.name] = vals[i]
	}
	// Restore the pool connection's settings.
	_, err = conn.Exec(ctx, "RESET ALL")
	require.NoError(t, err)
	return out
}

// requireValue compares a decoded value with an expectation, exactly:
// floats by bits (NaN, -0), times by instant.
func requireValue(t *testing.T, want, got any, msg string) {
	t.Helper()
	switch w := want.(type) {
	case float64:
		g, ok := got.(float64)
		require.True(t, ok, "%s: got %T %v, want float64 %v", msg, got, got, w)
		if math.IsNaN(w) {
			require.True(t, math.IsNaN(g), "%s: got %v, want NaN", msg, g)
			return
		}
		require.Equal(t, math.Float64bits(w), math.Float64bits(g), "%s: got %v, want %v", msg, g, w)
	case time.Time:
		g, ok := got.(time.Time)
		require.True(t, ok, "%s: got %T %v, want time.Time %v", msg, got, got, w)
		require.True(t, w.Equal(g), "%s: got %v, want %v", msg, g, w)
	case string:
		g, ok := got.(string)
		require.True(t, ok, "%s: got %T %v, want string %q", msg, got, trunc(got), trunc(w))
		if g != w {
			require.Failf(t, "value differs", "%s: got %q, want %q", msg, trunc(g), trunc(w))
		}
	case []byte:
		g, ok := got.([]byte)
		require.True(t, ok, "%s: got %T, want []byte", msg, got)
		require.NotNil(t, g, "%s: []byte must not be nil (nil is NULL)", msg)
		require.True(t, bytes.Equal(w, g), "%s: bytes differ (len %d, want %d)", msg, len(g), len(w))
	default:
		require.Equal(t, want, got, msg)
	}
}

func trunc(v any) any {
	if s, ok := v.(string); ok && len(s) > 200 {
		return s[:200] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return v
}

// requireRow checks a decoded row image against the row's expectations
// and the table's text forms.
func requireRow(t *testing.T, r typeRow, got duplex.Values, texts map[string]*string, what string) {
	t.Helper()
	require.Equal(t, int64(r.id), got["id"], what)
	for _, c := range typeCols {
		msg := fmt.Sprintf("%s row %d column %s (%s)", what, r.id, c.name, c.typ)
		v, present := got[c.name]
		require.True(t, present, "%s: missing", msg)
		if w, ok := r.want[c.name]; ok {
			requireValue(t, w, v, msg)
		}
		if texts[c.name] == nil {
			require.Nil(t, v, "%s: want NULL", msg)
			continue
		}
		require.NotNil(t, v, "%s: NULL, want %q", msg, trunc(*texts[c.name]))
		if !c.wellKnown {
			requireValue(t, *texts[c.name], v, msg+" (text form)")
			continue
		}
		if _, ok := r.want[c.name]; !ok {
			require.Failf(t, "no expectation", "%s: decoded %T %v, add it to want", msg, v, trunc(v))
		}
		switch v.(type) {
		case int64, float64, bool, string, []byte, time.Time, json.RawMessage, duplex.JSONB, []string:
		default:
			require.Failf(t, "unexpected Go type", "%s: %T", msg, v)
		}
	}
}

// writeBack inserts (or, for updates, updates) a decoded image into table
// with explicit casts, the way an applier writes values it did not create.
func writeBack(ctx context.Context, e *env, table string, c duplex.Change) error {
	args := []any{c.After["id"]}
	var names, params, sets []string
	for _, col := range typeCols {
		v, ok := c.After[col.name]
		if !ok {
			continue // unchanged: never written
		}
		args = append(args, v)
		p := fmt.Sprintf("$%d::%s", len(args), col.typ)
		names = append(names, col.name)
		params = append(params, p)
		sets = append(sets, col.name+" = "+p)
	}
	var sql string
	switch c.Op {
	case duplex.OpInsert:
		sql = "INSERT INTO " + table + " (id, " + strings.Join(names, ", ") + ") VALUES ($1, " + strings.Join(params, ", ") + ")"
	case duplex.OpUpdate:
		sql = "UPDATE " + table + " SET " + strings.Join(sets, ", ") + " WHERE id = $1"
	default:
		return fmt.Errorf("unexpected op %v", c.Op)
	}
	_, err := e.db.Pool.Exec(ctx, sql, args...)
	return err
}

// requireTablesEqual checks in SQL that tables a and b hold the same rows:
// per column by text form (exact: -0, numeric scale, json bytes, NaN), and
// with EXCEPT both ways over the text forms and over the typed columns that
// have an equality operator.
func requireTablesEqual(t *testing.T, e *env, a, b string) {
	t.Helper()
	ctx := context.Background()
	conn, err := e.db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, outputSettings)
	require.NoError(t, err)
	defer func() { _, _ = conn.Exec(ctx, "RESET ALL") }()
	var bad []string
	for _, c := range typeCols {
		var ids []int64
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT id FROM %[1]s x FULL JOIN %[2]s y USING (id)
			WHERE x.%[3]s::text IS DISTINCT FROM y.%[3]s::text ORDER BY id`, a, b, c.name))
		require.NoError(t, err)
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		for _, id := range ids {
			var x, y *string
			require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT %[3]s::text FROM %[1]s WHERE id = $1),
				(SELECT %[3]s::text FROM %[2]s WHERE id = $1)`, a, b, c.name), id).Scan(&x, &y))
			bad = append(bad, fmt.Sprintf("row %d column %s (%s): %s has %v, %s has %v", id, c.name, c.typ, a, show(x), b, show(y)))
		}
	}
	require.Empty(t, bad, "values that did not round-trip")

	texts := []string{"id"}
	typed := []string{"id"}
	for _, c := range typeCols {
		texts = append(texts, c.name+"::text")
		if c.typ != "json" {
			typed = append(typed, c.name)
		}
	}
	for _, cols := range [][]string{texts, typed} {
		list := strings.Join(cols, ", ")
		for _, pair := range [][2]string{{a, b}, {b, a}} {
			var n int
			require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM (SELECT %s FROM %s EXCEPT SELECT %s FROM %s) d",
				list, pair[0], list, pair[1])).Scan(&n))
			require.Zero(t, n, "rows of %s not in %s (%s)", pair[0], pair[1], list)
		}
	}
}

func show(s *string) string {
	if s == nil {
		return "NULL"
	}
	return fmt.Sprintf("%q", trunc(*s))
}

func TestTypes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// settings are database defaults that shape output functions'
		// text; the source must not depend on them.
		settings []string
	}{
		{"defaults", nil},
		{"hostile_settings", []string{
			"DateStyle = 'SQL, DMY'", "IntervalStyle = sql_standard", "extra_float_digits = 0",
			"bytea_output = escape", "TimeZone = 'America/St_Johns'",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testTypes(t, tc.settings)
		})
	}
}

func testTypes(t *testing.T, settings []string) {
	e := newEnv(t, typesSchema)
	createTypesTable(t, e, "types_a")
	createTypesTable(t, e, "types_b")
	for _, s := range settings {
		e.exec("ALTER DATABASE " + pgx.Identifier{e.db.Name}.Sanitize() + " SET " + s)
	}
	src := e.setupSource(nil, "types_a")
	s := startStream(t, src, streamOpts{ack: true})

	rows := typeRows()
	for _, r := range rows {
		insertTypeRow(t, e, "types_a", r)
	}
	inserts := s.next(len(rows))
	texts := map[int64]map[string]*string{}
	for i, r := range rows {
		c := inserts[i]
		require.Equal(t, duplex.OpInsert, c.Op)
		require.Empty(t, c.Unchanged, "row %d", r.id)
		require.Nil(t, c.Before)
		texts[r.id] = textForms(t, e, "types_a", r.id)
		requireRow(t, r, c.After, texts[r.id], "insert")
		require.NoError(t, writeBack(t.Context(), e, "types_b", c), "write back row %d", r.id)
	}
	requireTablesEqual(t, e, "types_a", "types_b")

	// Updates: an update not touching the TOASTed columns reports them as
	// unchanged (not NULL) and carries the full before image; setting one
	// to NULL reports NULL; rewriting one sends the new value.
	long3 := longText(4)
	e.exec("UPDATE types_a SET i4 = i4 + 1 WHERE id = 3")
	e.exec("UPDATE types_a SET t_long = NULL WHERE id = 3")
	e.exec("UPDATE types_a SET t_long = $1, t = 'changed' WHERE id = 2", long3)
	sets := make([]string, len(typeCols))
	for i, c := range typeCols {
		sets[i] = c.name + " = NULL"
	}
	e.exec("UPDATE types_a SET " + strings.Join(sets, ", ") + " WHERE id = 1")
	e.exec("UPDATE types_a SET i2 = 7 WHERE id = 4")
	ups := s.next(5)
	for _, c := range ups {
		require.Equal(t, duplex.OpUpdate, c.Op, c.ID)
		require.NotNil(t, c.Before, "REPLICA IDENTITY FULL: before image of %s", c.ID)
	}

	// 1: i4 changed; t_long and by untouched and stored out of line.
	u := ups[0]
	require.Equal(t, int64(3), idOf(t, u))
	require.ElementsMatch(t, []string{"t_long", "by"}, u.Unchanged, "untouched TOASTed columns")
	require.NotContains(t, u.After, "t_long", "an unchanged column is missing, not NULL")
	require.NotContains(t, u.After, "by")
	require.Equal(t, int64(1), u.After["i4"])
	requireRow(t, rows[2], u.Before, texts[3], "before image")
	// 2: t_long set to NULL: NULL, not unchanged.
	u = ups[1]
	require.Equal(t, []string{"by"}, u.Unchanged)
	require.Contains(t, u.After, "t_long")
	require.Nil(t, u.After["t_long"])
	requireValue(t, rows[2].want["t_long"], u.Before["t_long"], "before image of t_long")
	// 3: t_long rewritten.
	u = ups[2]
	require.Empty(t, u.Unchanged)
	requireValue(t, long3, u.After["t_long"], "new t_long")
	requireValue(t, "changed", u.After["t"], "new t")
	require.Nil(t, u.Before["t_long"])
	// 4: every column set to NULL.
	u = ups[3]
	require.Empty(t, u.Unchanged)
	require.Len(t, u.After, len(typeCols)+1)
	for _, c := range typeCols {
		require.Contains(t, u.After, c.name)
		require.Nil(t, u.After[c.name], c.name)
	}
	requireRow(t, rows[0], u.Before, texts[1], "before image")
	// 5: a row of NULLs.
	u = ups[4]
	require.Equal(t, int64(7), u.After["i2"])
	require.Nil(t, u.Before["i2"])

	for _, c := range ups {
		require.NoError(t, writeBack(t.Context(), e, "types_b", c), "write back %s", c.ID)
	}
	requireTablesEqual(t, e, "types_a", "types_b")

	// Schema drift: a column added while streaming shows up in later changes.
	e.exec("ALTER TABLE types_a ADD COLUMN extra integer DEFAULT 5")
	e.exec("INSERT INTO types_a (id) VALUES (100)")
	c := s.next(1)[0]
	require.Equal(t, int64(100), idOf(t, c))
	require.Equal(t, int64(5), c.After["extra"])
	require.NoError(t, s.stop())
}
