package pgpoll_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pgpoll"
	"github.com/duplexsync/duplex/internal/testenv"
)

// wallDDL creates items with a timestamp without time zone updated_at,
// set by DEFAULT now() and a trigger: each value is the wall-clock time
// of the writing session's TimeZone.
const wallDDL = `
CREATE TABLE items (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	n bigint NOT NULL,
	note text,
	updated_at timestamp NOT NULL DEFAULT now());
CREATE INDEX items_poll ON items (updated_at, id);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();`

// zoneWrites is how many rows the zone tests insert, then update.
const zoneWrites = 20

// setDatabaseZone sets the TimeZone of new sessions of db.
func setDatabaseZone(t *testing.T, db *testenv.DB, zone string) {
	t.Helper()
	_, err := db.Pool.Exec(t.Context(), "ALTER DATABASE "+pgx.Identifier{db.Name}.Sanitize()+" SET timezone = "+quote(zone))
	require.NoError(t, err)
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// writersPool returns a pool of new sessions of db, with TimeZone zone
// ("": the database's), and checks that they are in wantZone.
func writersPool(t *testing.T, db *testenv.DB, zone, wantZone string) *pgxpool.Pool {
	t.Helper()
	pcfg, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	if zone != "" {
		pcfg.ConnConfig.RuntimeParams["timezone"] = zone
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	var got string
	require.NoError(t, pool.QueryRow(t.Context(), "SHOW timezone").Scan(&got))
	require.Equal(t, wantZone, got, "the writers' sessions' TimeZone")
	return pool
}

// runZoneWrites polls items while writers insert and update rows, each in
// its own transaction, and checks that every version arrives with a
// CommitTime that is the instant of the write; then that a new source
// resumes from the stored watermark, with nothing lost or repeated.
func runZoneWrites(t *testing.T, db *testenv.DB, writers *pgxpool.Pool, mod func(*pgpoll.Config)) {
	t.Helper()
	ctx := t.Context()
	h := &harness{t: t, db: db, sync: testenv.UniqueName(t, "s"), mod: mod, table: duplex.Table{Schema: "public", Name: "items"}}
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := writers.Exec(ctx, sql, args...)
		require.NoError(t, err, sql)
	}
	began := time.Now()
	exec("INSERT INTO items (id, name, n) VALUES (0, 'first', 0)")
	c := consume(t, h.newSource(), "", true)
	// The first pass delivered row 0 and moved the watermark to its safe
	// point: the rows below are found from there.
	c.waitFor(1)
	for id := int64(1); id <= zoneWrites; id++ {
		exec("INSERT INTO items (id, name, n) VALUES ($1, 'row', $1)", id)
	}
	for id := int64(1); id <= zoneWrites; id++ {
		exec("UPDATE items SET n = n + 100 WHERE id = $1", id)
	}
	done := func(got []duplex.Change) bool {
		last := map[int64]int64{}
		for _, ch := range got {
			last[ch.Key[0].Value.(int64)] = ch.After["n"].(int64)
		}
		for id := int64(1); id <= zoneWrites; id++ {
			if last[id] != id+100 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(waitFor)
	for !done(c.snapshot()) {
		if time.Now().After(deadline) {
			got := c.snapshot()
			t.Fatalf("after %d inserts and %d updates in zone %s, %d changes arrived: rows were lost", zoneWrites, zoneWrites, sessionZone(t, writers), len(got))
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := c.snapshot()
	waitStored(t, h, got[len(got)-1].Position)
	c.stop()
	ended := time.Now()
	for _, ch := range got {
		require.WithinRange(t, ch.CommitTime, began.Add(-time.Minute), ended.Add(time.Minute),
			"%s: CommitTime is the instant the row was written", &ch)
	}

	// A new source resumes from the stored watermark.
	exec("INSERT INTO items (id, name, n) VALUES ($1, 'after restart', 0)", zoneWrites+1)
	exec("UPDATE items SET note = 'after restart' WHERE id = 1")
	c2 := consume(t, h.newSource(), "", true)
	c2.waitFor(2)
	// Give a redelivery of the acknowledged rows a chance to show up.
	exec("INSERT INTO items (id, name, n) VALUES ($1, 'sentinel', 0)", zoneWrites+2)
	again := c2.waitFor(3)
	c2.stop()
	ids := map[int64]bool{}
	for _, ch := range again {
		ids[ch.Key[0].Value.(int64)] = true
	}
	require.Equal(t, map[int64]bool{1: true, zoneWrites + 1: true, zoneWrites + 2: true}, ids, "after the restart, only what changed since")
	require.Len(t, again, 3)
}

func sessionZone(t *testing.T, pool *pgxpool.Pool) string {
	var z string
	if err := pool.QueryRow(context.Background(), "SHOW timezone").Scan(&z); err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return z
}

// TestTimestampColumnInDatabaseZone: a timestamp without time zone column
// written by sessions in the database's TimeZone, west of UTC, is read in
// that zone: every insert and update arrives (compared with a watermark in
// UTC, they fell hours behind it and were never read). The source says
// which zone it uses, and warns about the column's type.
func TestTimestampColumnInDatabaseZone(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), wallDDL)
	require.NoError(t, err)
	setDatabaseZone(t, db, "America/New_York")
	writers := writersPool(t, db, "", "America/New_York")
	var logs testenv.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	runZoneWrites(t, db, writers, func(c *pgpoll.Config) { c.Logger = log })
	out := logs.String()
	require.Contains(t, out, `time_zone=America/New_York`, "the zone used is logged")
	require.Contains(t, out, "level=WARN msg=\"poll column is timestamp without time zone", "the column type is warned about")
	require.Contains(t, out, "timestamptz")
}

// TestColumnTimeZoneOption: with the database's TimeZone UTC and writers
// that set America/New_York per session, Config.ColumnTimeZone tells the
// source their zone. A zone PostgreSQL does not know is a permanent error
// naming the field.
func TestColumnTimeZoneOption(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), wallDDL)
	require.NoError(t, err)
	setDatabaseZone(t, db, "UTC")
	writers := writersPool(t, db, "America/New_York", "America/New_York")
	runZoneWrites(t, db, writers, func(c *pgpoll.Config) { c.ColumnTimeZone = "America/New_York" })

	src, err := pgpoll.New(t.Context(), pgpoll.Config{ConnString: db.URL, Sync: "s", System: "a",
		Tables: []duplex.Table{{Schema: "public", Name: "items"}}, ColumnTimeZone: "Mars/Olympus_Mons", Logger: logger(t)})
	require.NoError(t, err)
	err = src.Setup(t.Context())
	src.Close()
	require.ErrorContains(t, err, "ColumnTimeZone")
	require.ErrorContains(t, err, "Mars/Olympus_Mons")
	require.True(t, duplex.IsPermanent(err), "%v is permanent", err)
}

// TestColumnTimeZoneFromConnString: a TimeZone that the connection string
// sets is the writers' zone by default (the source's own sessions are in
// UTC all the same).
func TestColumnTimeZoneFromConnString(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), wallDDL)
	require.NoError(t, err)
	setDatabaseZone(t, db, "UTC")
	writers := writersPool(t, db, "America/New_York", "America/New_York")
	u, err := url.Parse(db.URL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("TimeZone", "America/New_York")
	u.RawQuery = q.Encode()
	runZoneWrites(t, db, writers, func(c *pgpoll.Config) { c.ConnString = u.String() })
}
