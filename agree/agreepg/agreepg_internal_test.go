package agreepg

import (
	"github.com/jackc/pgx/v5"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
)

// TestLoadProbesTheIndex: on a fresh, unanalyzed table Load's statement is
// an index probe per key, not a scan of the table.
func TestLoadProbesTheIndex(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	s, err := New(t.Context(), db.Pool, Config{Sync: "s", Cache: -1})
	require.NoError(t, err)
	tbl := duplex.Table{Schema: "public", Name: "t"}
	keys := make([]duplex.Key, 2000)
	as := make([]duplex.Agreement, len(keys))
	names := make([]string, 0, 3)
	for i := range keys {
		keys[i] = duplex.Key{{Name: "id", Value: int64(i)}}
		as[i] = duplex.Agreement{Known: true, Version: 1}
	}
	require.NoError(t, s.Save(t.Context(), tbl, keys, as))
	for _, k := range keys[:3] {
		names = append(names, dbText(k.String()))
	}
	rows, err := db.Pool.Query(t.Context(), "EXPLAIN "+s.rec.loadSQL, s.rec.sync, s.rec.system, tableText(tbl), names)
	require.NoError(t, err)
	var plan []string
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan = append(plan, line)
	}
	require.NoError(t, rows.Err())
	text := strings.Join(plan, "\n")
	require.Contains(t, text, "Index", text)
	require.NotContains(t, text, "Seq Scan", text)

	// The generic plan a prepared statement switches to after a few runs
	// must probe per key too: a join flattened from the LATERAL became a
	// bitmap scan of every row of the table (82 ms per load at 224,000
	// rows in the soak, growing with the table).
	tx, err := db.Pool.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(t.Context()) }()
	_, err = tx.Exec(t.Context(), "SET LOCAL plan_cache_mode = force_generic_plan")
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), "PREPARE agreed_load(text, text, text, text[]) AS "+s.rec.loadSQL)
	require.NoError(t, err)
	rows, err = tx.Query(t.Context(), "EXPLAIN EXECUTE agreed_load('s', '', 'public.t', '{a,b,c}')", pgx.QueryExecModeSimpleProtocol)
	require.NoError(t, err)
	plan = plan[:0]
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan = append(plan, line)
	}
	require.NoError(t, rows.Err())
	text = strings.Join(plan, "\n")
	require.Contains(t, text, "Index Scan", text)
	require.NotContains(t, text, "Bitmap Heap Scan", text)
	require.NotContains(t, text, "Hash", text)
}

func TestTexts(t *testing.T) {
	t.Parallel()
	require.Equal(t, "a=1", dbText("a=1"))
	require.NotEqual(t, dbText("a\x00"), dbText("a\uFFFD"))
	require.True(t, strings.HasPrefix(dbText("\uFFFDx"), "\uFFFD"))
	require.NotEqual(t, dbText("\uFFFDx"), "\uFFFDx")
	seen := map[string]duplex.Table{}
	for _, tb := range []duplex.Table{
		{Schema: "a.b", Name: "c"}, {Schema: "a", Name: "b.c"}, {Name: "a.b.c"},
		{Schema: "a", Name: "b"}, {Name: "a.b"}, {Name: "b"}, {Schema: `"a"`, Name: "b"}, {Schema: "", Name: `"a".b`},
	} {
		txt := tableText(tb)
		prev, dup := seen[txt]
		require.False(t, dup, "%v and %v share %q", prev, tb, txt)
		seen[txt] = tb
	}
	require.Equal(t, "public.customers", tableText(duplex.Table{Schema: "public", Name: "customers"}))
}

// TestRecordsOfTheJSONFormRead: records stored with rows in the tagged
// JSON form (before the binary row form) read as before.
func TestRecordsOfTheJSONFormRead(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	s, err := New(t.Context(), db.Pool, Config{Sync: "s", Cache: -1})
	require.NoError(t, err)
	tbl := duplex.Table{Schema: "public", Name: "t"}
	key := duplex.Key{{Name: "id", Value: int64(7)}}
	row := `{"t":"values","v":{"id":{"t":"int64","v":"7"},"name":{"t":"s","v":"seven"}}}`
	peer := `{"t":"values","v":{"id":{"t":"int64","v":"7"},"name":{"t":"s","v":"SEVEN"}}}`
	_, err = db.Pool.Exec(t.Context(), `INSERT INTO `+tableName("")+` (sync, system, tbl, key, version, "row", peer, peer_kind, unknown)
		VALUES ('s', '', $1, $2, 3, $3, $4, 0, '["name"]')`, tableText(tbl), dbText(key.String()), []byte(row), []byte(peer))
	require.NoError(t, err)
	as, err := s.Load(t.Context(), tbl, []duplex.Key{key})
	require.NoError(t, err)
	require.Equal(t, duplex.Agreement{Known: true, Version: 3, Row: duplex.Values{"id": int64(7), "name": "seven"},
		Peer: duplex.Values{"id": int64(7), "name": "SEVEN"}, Unknown: []string{"name"}}, as[0])
}

// TestEnsureCollatesKeysC: a records table of an earlier version, whose key
// columns use the database's collation, whose pages fill up and whose
// primary key leads with sync, gets "C" ones, a fillfactor of 50 and the
// primary key (key, tbl, system, sync) (its records kept); running Ensure
// again changes nothing.
func TestEnsureCollatesKeysC(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), `CREATE SCHEMA duplex; CREATE TABLE duplex.agreements (
		sync text NOT NULL, system text NOT NULL, tbl text NOT NULL, key text NOT NULL, version bigint NOT NULL,
		"row" bytea, peer bytea, peer_kind smallint NOT NULL, unknown jsonb, updated_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (sync, system, tbl, key));
		INSERT INTO duplex.agreements (sync, system, tbl, key, version, peer_kind) VALUES ('s', '', 'public.t', 'id=1', 5, 2)`)
	require.NoError(t, err)
	collations := func() []string {
		rows, err := db.Pool.Query(t.Context(), `SELECT a.attname || ':' || coalesce(c.collname, '-') FROM pg_attribute a
			LEFT JOIN pg_collation c ON c.oid = a.attcollation
			WHERE a.attrelid = 'duplex.agreements'::regclass AND a.attname IN ('sync', 'system', 'tbl', 'key') ORDER BY a.attnum`)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	options := func() []string {
		var opts []string
		require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'duplex.agreements'::regclass`).Scan(&opts))
		return opts
	}
	require.NotEqual(t, []string{"sync:C", "system:C", "tbl:C", "key:C"}, collations(), "the old table")
	require.Empty(t, options(), "the old table")
	require.Equal(t, "sync,system,tbl,key", primaryKey(t, db), "the old table")
	for range 2 {
		s, err := New(t.Context(), db.Pool, Config{Sync: "s", Cache: -1})
		require.NoError(t, err)
		require.Equal(t, []string{"sync:C", "system:C", "tbl:C", "key:C"}, collations())
		require.Equal(t, []string{"fillfactor=50"}, options())
		require.Equal(t, "key,tbl,system,sync", primaryKey(t, db))
		as, err := s.Load(t.Context(), duplex.Table{Schema: "public", Name: "t"}, []duplex.Key{{{Name: "id", Value: int64(1)}}})
		require.NoError(t, err)
		require.Equal(t, duplex.Agreement{Known: true, Version: 5}, as[0])
	}
}

// primaryKey returns the columns of the records table's primary key, in order.
func primaryKey(t *testing.T, db *testenv.DB) string {
	t.Helper()
	var cols string
	require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT string_agg(a.attname, ',' ORDER BY k.n)
		FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY AS k(attnum, n), pg_attribute a
		WHERE c.conrelid = 'duplex.agreements'::regclass AND c.contype = 'p' AND a.attrelid = c.conrelid AND a.attnum = k.attnum`).Scan(&cols))
	return cols
}

// TestEnsureLeavesFillFactorToTheOwner: a role that may use the records
// table of an earlier version but does not own it starts all the same; the
// fillfactor and the primary key stay as they were, and the records read
// and write through the old key.
func TestEnsureLeavesFillFactorToTheOwner(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), `CREATE SCHEMA duplex; CREATE TABLE duplex.agreements (
		sync text COLLATE "C" NOT NULL, system text COLLATE "C" NOT NULL, tbl text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL,
		version bigint NOT NULL, "row" bytea, peer bytea, peer_kind smallint NOT NULL, unknown jsonb,
		updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (sync, system, tbl, key))`)
	require.NoError(t, err)
	role := testenv.Role(t, db)
	_, err = db.Pool.Exec(t.Context(), `GRANT CREATE ON DATABASE `+pgx.Identifier{db.Name}.Sanitize()+` TO `+pgx.Identifier{role}.Sanitize()+`;
		GRANT USAGE, CREATE ON SCHEMA duplex TO `+pgx.Identifier{role}.Sanitize()+`;
		GRANT SELECT, INSERT, UPDATE, DELETE ON duplex.agreements TO `+pgx.Identifier{role}.Sanitize())
	require.NoError(t, err)
	s, err := New(t.Context(), testenv.ConnectAs(t, db, role), Config{Sync: "s", Cache: -1})
	require.NoError(t, err)
	require.NoError(t, s.Save(t.Context(), duplex.Table{Schema: "public", Name: "t"}, []duplex.Key{{{Name: "id", Value: int64(1)}}},
		[]duplex.Agreement{{Known: true, Version: 1}}))
	var opts []string
	require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'duplex.agreements'::regclass`).Scan(&opts))
	require.Empty(t, opts)
	require.Equal(t, "sync,system,tbl,key", primaryKey(t, db))
	as, err := s.Load(t.Context(), duplex.Table{Schema: "public", Name: "t"}, []duplex.Key{{{Name: "id", Value: int64(1)}}, {{Name: "id", Value: int64(2)}}})
	require.NoError(t, err)
	require.Equal(t, []duplex.Agreement{{Known: true, Version: 1}, {}}, as)
}
