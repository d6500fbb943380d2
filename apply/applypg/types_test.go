package applypg_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/internal/testenv"
)

// typesDDL creates the enum, the domain and the table types_a; types_b is
// made LIKE it.
const typesDDL = `
CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s "ok"');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE types_a (
	id int PRIMARY KEY,
	i2 smallint, i4 integer, i8 bigint,
	num numeric(30,10),
	r real, d double precision,
	b boolean,
	t text, vc varchar(10), ch char(5),
	ba bytea,
	dt date, ts timestamp, tstz timestamptz, tm time, iv interval,
	u uuid, j json, jb jsonb,
	ta text[], ia int[],
	e mood, dom posint, ip inet
);
CREATE TABLE types_b (LIKE types_a INCLUDING ALL);`

// typesRows are rows of types_a as SQL value lists (after the id).
var typesRows = []string{
	// every column NULL
	`NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL`,
	// ordinary values
	`1, 2, 3, 12.5, 1.5, 2.25, true, 'hello', 'varchar', 'ab', '\x0102ff', '2024-02-29', '2024-02-29 13:14:15.123456',
	 '2024-02-29 13:14:15.123456+02', '13:14:15.5', '1 year 2 mons -3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
	 '{"a": [1, 2.50, "x\u00e9"], "b": null}', '{"nested": {"deep": [1, {"x": "ü"}]}, "emoji": "😀"}',
	 '{a,"b c","d,e"}', '{1,2,3}', 'happy', 5, '192.168.0.1/24'`,
	// limits
	`-32768, -2147483648, -9223372036854775808, 99999999999999999999.9999999999, 3.4028235e38, 1.7976931348623157e308, false,
	 'quotes '' " and \ backslashes \\ \n not a newline', 'ñandú🦀xyzw', 'abcde', '', '0001-01-01', '0001-01-01 00:00:00',
	 '0001-01-01 00:00:00+00', '00:00:00', '-178000000 years', '00000000-0000-0000-0000-000000000000',
	 '  {"spacing" :   "kept",  "dup": 1, "dup": 2}  ', '{"b": 1, "a": [true, false, null], "s": "\"q\" \\ é"}',
	 '{}', '{}', 'sad', 2147483647, '::1'`,
	`32767, 2147483647, 9223372036854775807, 0.0000000001, 1e-45, 5e-324, true,
	 E'tab\tnewline\ncr\r unicode \u2028 end', 'NULL', 'a', '\x000000', 'infinity', 'infinity', 'infinity', '24:00:00',
	 '178000000 years', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '[]', '[]',
	 '{"a,b","c\"d","",NULL," space","NULL","\\"}', '{1,NULL,3}', 'it''s "ok"', 1, '10.0.0.0/8'`,
	`0, 0, 0, -99999999999999999999.9999999999, 'NaN', 'NaN', NULL, '', '', '     ', '\x', '-infinity', '-infinity', '-infinity',
	 '23:59:59.999999', '0', NULL, 'null', '"just a string"', '{"{}","NULL"}', '{{1,2},{3,4}}', NULL, NULL, '2001:db8::1/64'`,
	`1, 1, 1, -0.0000000001, '-0', '-0', NULL, 'x', 'x', 'x', NULL, '0044-03-15 BC', '0044-03-15 12:00:00 BC',
	 '0044-03-15 12:00:00+00 BC', NULL, '-1 days -00:00:00.000001', NULL, '1', '1.0', NULL, NULL, NULL, NULL, NULL`,
	`NULL, NULL, NULL, 0, 'Infinity', '-Infinity', NULL, NULL, NULL, NULL, NULL, '2000-01-01', '1999-12-31 23:59:59.999999',
	 '1969-07-20 20:17:40+00', NULL, NULL, NULL, '{"big": 123456789012345678901234567890}', '{"big": 123456789012345678901234567890.5}',
	 NULL, NULL, NULL, NULL, NULL`,
	`NULL, NULL, NULL, 1e19, '-Infinity', 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	 '2024-06-01 12:00:00.5+05:45', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL`,
}

// TestTypesRoundTrip reads rows of every common type through Lookup,
// inserts them into an identical table with Apply, updates and deletes
// them with full expectations, and checks in SQL that the tables are equal
// value for value (the text form of whole rows, so -0, NaN, padding and
// JSON whitespace count).
func TestTypesRoundTrip(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	exec(t, db, typesDDL)
	for i, vals := range typesRows {
		exec(t, db, fmt.Sprintf("INSERT INTO types_a VALUES (%d, %s)", i+1, vals))
	}
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	big[0], big[1], big[len(big)-1] = 0, 0, 0
	big100k := make([]byte, 50_000)
	_, _ = rand.Read(big100k)
	bigID := len(typesRows) + 1
	exec(t, db, "INSERT INTO types_a (id, ba, t) VALUES ($1, $2, $3)", bigID, big, hex.EncodeToString(big100k))
	n := bigID

	for _, m := range []applypg.Method{applypg.MethodUnnest, applypg.MethodRows, applypg.MethodValues, applypg.MethodCopy} {
		t.Run(m.String(), func(t *testing.T) {
			// Not parallel: the subtests share types_b.
			exec(t, db, "TRUNCATE types_b")
			a := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Method = m })
			ta, tb := duplex.Table{Schema: "public", Name: "types_a"}, duplex.Table{Schema: "public", Name: "types_b"}
			keys := make([]duplex.Key, n)
			for i := range keys {
				keys[i] = duplex.Key{{Name: "id", Value: int64(i + 1)}}
			}
			rows, err := a.Lookup(ctx, ta, keys)
			require.NoError(t, err)
			require.Len(t, rows, n)
			checkTypes(t, rows)

			// Insert into types_b.
			var writes []duplex.Write
			for i, r := range rows {
				require.NotNil(t, r, "row %d", i+1)
				writes = append(writes, duplex.Write{Op: duplex.OpInsert, Table: tb, Key: keys[i], Set: r,
					Change: &duplex.Change{ID: fmt.Sprintf("ins-%d", i)}})
			}
			require.NoError(t, a.Apply(ctx, &duplex.Batch{Writes: writes, Source: "a"}))
			requireTablesEqual(t, db)

			// The copies read back identically.
			got, err := a.Lookup(ctx, tb, keys)
			require.NoError(t, err)
			for i := range rows {
				requireSameValues(t, rows[i], got[i], "row %d read back from types_b", i+1)
			}

			// Update every column of each row of types_b to the values of
			// another row, expecting the whole current row; then back.
			swap := func(from []duplex.Values) {
				t.Helper()
				writes = writes[:0]
				for i := range n {
					src := from[(i+1)%n].Clone()
					delete(src, "id")
					exp := got[i].Clone()
					delete(exp, "id")
					writes = append(writes, duplex.Write{Op: duplex.OpUpdate, Table: tb, Key: keys[i], Set: src, Expect: exp,
						Change: &duplex.Change{ID: fmt.Sprintf("upd-%d-%d", i, time.Now().UnixNano())}})
				}
				require.NoError(t, a.Apply(ctx, &duplex.Batch{Writes: writes, Source: "a"}))
				got, err = a.Lookup(ctx, tb, keys)
				require.NoError(t, err)
				for i := range n {
					want := from[(i+1)%n].Clone()
					want["id"] = int64(i + 1)
					requireSameValues(t, want, got[i], "row %d after update", i+1)
				}
			}
			swap(rows)
			// Back: row i gets the values of row i again.
			rotated := make([]duplex.Values, n)
			for i := range n {
				rotated[(i+1)%n] = rows[i]
			}
			swap(rotated)
			requireTablesEqual(t, db)

			// A stale expectation on any single column fails, for a row
			// of values and a row of NULLs.
			for _, ri := range []int{2, 0} {
				for col, wrong := range wrongValues {
					exp := got[ri].Clone()
					delete(exp, "id")
					exp[col] = wrong
					err := a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{{Op: duplex.OpUpdate, Table: tb, Key: keys[ri],
						Set: duplex.Values{"i4": int64(7)}, Expect: exp, Change: &duplex.Change{ID: "stale-" + col}}}})
					require.ErrorIs(t, err, duplex.ErrStale, "row %d: expectation on column %s (%v, want %v)", ri+1, col, got[ri][col], wrong)
				}
			}

			// Delete every row expecting the whole row.
			writes = writes[:0]
			for i := range n {
				writes = append(writes, duplex.Write{Op: duplex.OpDelete, Table: tb, Key: keys[i], Expect: got[i],
					Change: &duplex.Change{ID: fmt.Sprintf("del-%d", i)}})
			}
			require.NoError(t, a.Apply(ctx, &duplex.Batch{Writes: writes, Source: "a"}))
			var left int
			require.NoError(t, db.Pool.QueryRow(ctx, "SELECT count(*) FROM types_b").Scan(&left))
			require.Zero(t, left, "every row deleted")

			// The domain's CHECK holds: a permanent error naming the write.
			bad := rows[1].Clone()
			bad["dom"] = int64(-1)
			err = a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{
				{Op: duplex.OpInsert, Table: tb, Key: keys[0], Set: rows[0], Change: &duplex.Change{ID: "ok-0"}},
				{Op: duplex.OpInsert, Table: tb, Key: keys[1], Set: bad, Change: &duplex.Change{ID: "bad-1"}},
			}})
			requireBatchError(t, err, 1, "23514")
		})
	}
}

// wrongValues are values of each column of types_a that no row holds;
// the strings are one character longer than a value of row 3, which fits
// once cut to the column's length.
var wrongValues = map[string]any{
	"i2": int64(99), "i4": int64(99), "i8": int64(99), "num": "99.5", "r": 99.5, "d": 99.5, "b": true,
	"t": "zz", "vc": "ñandú🦀xyzwX", "ch": "abcdeX", "ba": []byte{9},
	"dt": time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC), "ts": time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC),
	"tstz": time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC), "tm": "01:02:03", "iv": "5 days",
	"u": "11111111-1111-1111-1111-111111111111", "j": json.RawMessage(`{"different": true}`),
	"jb": duplex.JSONB(`{"different": true}`), "ta": []string{"zz"}, "ia": "{9}", "e": "happy", "dom": int64(99),
	"ip": "10.1.2.3",
}

// checkTypes checks the Go types Lookup produced for row 2 (ordinary
// values) and a few special values.
func checkTypes(t *testing.T, rows []duplex.Values) {
	t.Helper()
	for col, v := range rows[0] {
		if col != "id" {
			require.Nil(t, v, "NULL column %s is a present nil", col)
		}
	}
	require.Len(t, rows[0], 25, "every column present")
	r := rows[1]
	for col, want := range map[string]string{
		"id": "int64", "i2": "int64", "i4": "int64", "i8": "int64", "num": "string", "r": "float64", "d": "float64",
		"b": "bool", "t": "string", "vc": "string", "ch": "string", "ba": "[]uint8", "dt": "time.Time", "ts": "time.Time",
		"tstz": "time.Time", "tm": "string", "iv": "string", "u": "string", "j": "json.RawMessage", "jb": "duplex.JSONB",
		"ta": "[]string", "ia": "string", "e": "string", "dom": "int64", "ip": "string",
	} {
		require.Equal(t, want, fmt.Sprintf("%T", r[col]), "Go type of column %s", col)
	}
	require.Equal(t, "ab   ", r["ch"], "char(5) keeps its padding, like the replication source")
	require.Equal(t, "12.5000000000", r["num"])
	require.Equal(t, []string{"a", "b c", "d,e"}, r["ta"])
	require.Equal(t, "192.168.0.1/24", r["ip"])
	require.True(t, math.IsNaN(rows[4]["d"].(float64)))
	require.True(t, math.Signbit(rows[5]["d"].(float64)), "-0 keeps its sign")
	require.Equal(t, "infinity", rows[3]["tstz"])
	require.Equal(t, 0, rows[2]["tstz"].(time.Time).Compare(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)))
	require.Equal(t, -43, rows[5]["tstz"].(time.Time).UTC().Year(), "44 BC")
	require.Equal(t, []byte{}, rows[4]["ba"], "empty bytea")
	require.Len(t, rows[len(rows)-1]["ba"], 1<<20)
}

// requireSameValues checks two rows hold the same columns with equal values
// of the same Go types.
func requireSameValues(t *testing.T, want, got duplex.Values, msg string, args ...any) {
	t.Helper()
	require.Len(t, got, len(want), fmt.Sprintf(msg, args...))
	for col, w := range want {
		g, ok := got[col]
		require.True(t, ok, "%s: column %s missing", fmt.Sprintf(msg, args...), col)
		require.Equal(t, fmt.Sprintf("%T", w), fmt.Sprintf("%T", g), "%s: type of column %s", fmt.Sprintf(msg, args...), col)
		require.True(t, duplex.Equal(w, g), "%s: column %s: want %v, got %v", fmt.Sprintf(msg, args...), col, w, g)
	}
}

// requireTablesEqual checks types_a and types_b hold the same rows, column
// by column in their text form.
func requireTablesEqual(t *testing.T, db *testenv.DB) {
	t.Helper()
	var diff, na, nb int
	ctx := context.Background()
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM (SELECT ra::text FROM types_a ra EXCEPT SELECT rb::text FROM types_b rb) x) +
		(SELECT count(*) FROM (SELECT rb::text FROM types_b rb EXCEPT SELECT ra::text FROM types_a ra) y),
		(SELECT count(*) FROM types_a), (SELECT count(*) FROM types_b)`).Scan(&diff, &na, &nb))
	if diff != 0 {
		rows, err := db.Pool.Query(ctx, `(SELECT 'a', ra::text FROM types_a ra EXCEPT SELECT 'a', rb::text FROM types_b rb)
			UNION ALL (SELECT 'b', rb::text FROM types_b rb EXCEPT SELECT 'b', ra::text FROM types_a ra)`)
		require.NoError(t, err)
		for rows.Next() {
			var side, row string
			require.NoError(t, rows.Scan(&side, &row))
			if len(row) > 300 {
				row = row[:300] + "..."
			}
			t.Logf("only in types_%s: %s", side, row)
		}
		rows.Close()
	}
	require.Zero(t, diff, "rows differ between types_a and types_b")
	require.Equal(t, na, nb, "row counts")
}

// TestLookupIgnoresDatabaseOutputDefaults: a target database whose defaults
// change values' text form (DateStyle, bytea_output, extra_float_digits)
// still gives Lookup the same values.
func TestLookupIgnoresDatabaseOutputDefaults(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	for _, stmt := range []string{
		"ALTER DATABASE " + pgx.Identifier{db.Name}.Sanitize() + " SET DateStyle = 'SQL, DMY'",
		"ALTER DATABASE " + pgx.Identifier{db.Name}.Sanitize() + " SET bytea_output = 'escape'",
		"ALTER DATABASE " + pgx.Identifier{db.Name}.Sanitize() + " SET extra_float_digits = 0",
	} {
		_, err := db.Pool.Exec(ctx, stmt)
		require.NoError(t, err)
	}
	db.Pool.Reset() // new sessions pick up the defaults
	_, err := db.Pool.Exec(ctx, `CREATE TABLE od (id bigint PRIMARY KEY, at timestamptz, d date, b bytea, f double precision)`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO od VALUES (1, '2026-11-25 10:11:12.345678+00', '2026-02-03', '\x00ff10', 0.1)`)
	require.NoError(t, err)
	a, err := applypg.New(ctx, db.Pool, applypg.Config{Sync: testenv.UniqueName(t, "s"), Target: "b"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.DropOrigins(context.Background()) })
	rows, err := a.Lookup(ctx, duplex.Table{Schema: "public", Name: "od"}, []duplex.Key{{{Name: "id", Value: int64(1)}}})
	require.NoError(t, err)
	row := rows[0]
	require.True(t, row["at"].(time.Time).Equal(time.Date(2026, 11, 25, 10, 11, 12, 345678000, time.UTC)), "%v", row["at"])
	require.True(t, row["d"].(time.Time).Equal(time.Date(2026, 2, 3, 0, 0, 0, 0, time.UTC)), "%v", row["d"])
	require.Equal(t, []byte{0, 0xff, 0x10}, row["b"])
	require.Equal(t, 0.1, row["f"])
}
