package pglogical_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pglogical"
)

// TestTruncate checks that TRUNCATE of a published table is delivered as an
// OpTruncate change per table, in transaction order, and that truncating an
// unpublished table delivers nothing.
func TestTruncate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"), fmt.Sprintf(createTable, "more"), fmt.Sprintf(createTable, "other"))
	src := e.setupSource(nil, "items", "more")
	s := startStream(t, src, streamOpts{}) // nothing settled: a restart replays all
	items := duplex.Table{Schema: "public", Name: "items"}
	more := duplex.Table{Schema: "public", Name: "more"}

	e.exec("INSERT INTO items (id, name, n) VALUES (1, 'a', 1)")
	e.exec("TRUNCATE items")
	e.exec("TRUNCATE other")
	e.exec("TRUNCATE items, more RESTART IDENTITY")
	require.NoError(t, pgx.BeginFunc(t.Context(), e.db.Pool, func(tx pgx.Tx) error {
		for _, sql := range []string{
			"INSERT INTO items (id, name, n) VALUES (2, 'b', 2)",
			"TRUNCATE items",
			"INSERT INTO items (id, name, n) VALUES (3, 'c', 3)",
		} {
			if _, err := tx.Exec(t.Context(), sql); err != nil {
				return err
			}
		}
		return nil
	}))
	e.exec("INSERT INTO more (id, name, n) VALUES (4, 'd', 4)")

	got := s.next(8)
	type summary struct {
		op    duplex.Op
		table duplex.Table
	}
	var sum []summary
	for _, c := range got {
		sum = append(sum, summary{c.Op, c.Table})
	}
	require.Equal(t, []summary{
		{duplex.OpInsert, items},
		{duplex.OpTruncate, items},
		{duplex.OpTruncate, items}, {duplex.OpTruncate, more},
		{duplex.OpInsert, items}, {duplex.OpTruncate, items}, {duplex.OpInsert, items},
		{duplex.OpInsert, more},
	}, sum)
	ids := map[string]bool{}
	for i, c := range got {
		require.False(t, ids[c.ID], "duplicate ID %s", c.ID)
		ids[c.ID] = true
		require.Equal(t, "a", c.Source)
		require.False(t, c.CommitTime.IsZero())
		if i > 0 {
			require.Less(t, string(got[i-1].Position), string(c.Position))
		}
		if c.Op == duplex.OpTruncate {
			require.Nil(t, c.Key)
			require.Nil(t, c.Before)
			require.Nil(t, c.After)
		}
	}
	// One statement truncating two tables: one transaction, two changes.
	require.Equal(t, posCommit(t, got[2].Position), posCommit(t, got[3].Position))
	// A transaction mixing rows and a truncate keeps its order.
	require.Equal(t, posCommit(t, got[4].Position), posCommit(t, got[6].Position))
	require.Equal(t, int64(3), idOf(t, got[6]))
	s.none()
	require.NoError(t, s.stop())

	// A restart from a position in the middle of the mixed transaction
	// (a Pipeline's checkpoint) delivers the rest of it, with the same IDs.
	src2 := e.source(e.config("items", "more"))
	s2 := startStream(t, src2, streamOpts{from: got[4].Position})
	again := s2.next(3)
	require.Equal(t, []string{got[5].ID, got[6].ID, got[7].ID}, []string{again[0].ID, again[1].ID, again[2].ID})
	require.Equal(t, duplex.OpTruncate, again[0].Op)
	require.NoError(t, s2.stop())
}

func TestSetupErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t,
		fmt.Sprintf(createTable, "items"),
		"CREATE TABLE nopk (id bigint, name text)",
		fmt.Sprintf(createTable, "ident_default"),
		fmt.Sprintf(createTable, "ident_nothing"),
		"ALTER TABLE ident_nothing REPLICA IDENTITY NOTHING",
		"CREATE SCHEMA \"Odd Schema\"",
		"CREATE TABLE \"Odd Schema\".\"Odd Table\" (id int PRIMARY KEY)",
	)
	setup := func(t *testing.T, mod func(*pglogical.Config), tables ...string) error {
		t.Helper()
		cfg := e.config(tables...)
		cfg.Sync = e.sync + "_" + fmt.Sprint(len(t.Name()))
		if mod != nil {
			mod(&cfg)
		}
		src, err := pglogical.New(t.Context(), cfg)
		require.NoError(t, err)
		defer src.Close()
		return src.Setup(t.Context(), false)
	}
	noSet := func(c *pglogical.Config) { c.SetReplicaIdentity = false }
	exists := func(kind, name string) bool {
		var n int
		q := "SELECT count(*) FROM pg_publication WHERE pubname = $1"
		if kind == "slot" {
			q = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1"
		}
		require.NoError(t, e.db.Pool.QueryRow(context.Background(), q, name).Scan(&n))
		return n > 0
	}

	t.Run("no primary key", func(t *testing.T) {
		err := setup(t, nil, "items", "nopk")
		require.ErrorContains(t, err, "table public.nopk has no primary key")
		require.ErrorContains(t, err, `ALTER TABLE "public"."nopk" ADD PRIMARY KEY`)
		require.NotContains(t, err.Error(), "public.items")
		require.True(t, duplex.IsPermanent(err))
	})
	t.Run("missing table", func(t *testing.T) {
		err := setup(t, nil, "items", "missing")
		require.ErrorContains(t, err, "table public.missing does not exist")
		require.True(t, duplex.IsPermanent(err))
	})
	t.Run("replica identity", func(t *testing.T) {
		err := setup(t, noSet, "ident_default", "ident_nothing", "nopk")
		require.ErrorContains(t, err, "table public.ident_default has REPLICA IDENTITY DEFAULT")
		require.ErrorContains(t, err, "table public.ident_nothing has REPLICA IDENTITY NOTHING")
		require.ErrorContains(t, err, "before images")
		require.ErrorContains(t, err, `ALTER TABLE "public"."ident_default" REPLICA IDENTITY FULL`)
		require.ErrorContains(t, err, "Config.SetReplicaIdentity")
		require.ErrorContains(t, err, "public.nopk has no primary key", "every problem is reported at once")
		require.True(t, duplex.IsPermanent(err))
		var ident string
		require.NoError(t, e.db.Pool.QueryRow(t.Context(), "SELECT relreplident::text FROM pg_class WHERE relname = 'ident_default'").Scan(&ident))
		require.Equal(t, "d", ident, "left alone when SetReplicaIdentity is false")
	})
	t.Run("nothing created on error", func(t *testing.T) {
		cfg := e.config("ident_default")
		cfg.Sync, cfg.SetReplicaIdentity = e.sync+"_nothing", false
		src, err := pglogical.New(t.Context(), cfg)
		require.NoError(t, err)
		defer src.Close()
		require.Error(t, src.Setup(t.Context(), false))
		require.False(t, exists("publication", src.Slot()))
		require.False(t, exists("slot", src.Slot()))
	})
	t.Run("sets replica identity", func(t *testing.T) {
		require.NoError(t, setup(t, nil, "ident_default", "ident_nothing"))
		rows, err := e.db.Pool.Query(t.Context(), "SELECT relreplident::text FROM pg_class WHERE relname IN ('ident_default', 'ident_nothing')")
		require.NoError(t, err)
		idents, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, []string{"f", "f"}, idents)
	})
	t.Run("quoted names", func(t *testing.T) {
		cfg := e.config()
		cfg.Sync = e.sync + "_quoted"
		cfg.Tables = []duplex.Table{{Schema: "Odd Schema", Name: "Odd Table"}}
		src, err := pglogical.New(t.Context(), cfg)
		require.NoError(t, err)
		defer src.Close()
		require.NoError(t, src.Setup(t.Context(), false))
		s := startStream(t, src, streamOpts{ack: true})
		e.exec(`INSERT INTO "Odd Schema"."Odd Table" VALUES (1)`)
		c := s.next(1)[0]
		require.Equal(t, duplex.Table{Schema: "Odd Schema", Name: "Odd Table"}, c.Table)
		require.NoError(t, s.stop())
	})
}

// TestPublicationFollowsConfig checks that the publication's tables follow
// Config.Tables when a sync is restarted with another table list.
func TestPublicationFollowsConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fmt.Sprintf(createTable, "items"), fmt.Sprintf(createTable, "more"))
	published := func(slot string) []string {
		rows, err := e.db.Pool.Query(t.Context(), "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1", slot)
		require.NoError(t, err)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return names
	}
	src := e.setupSource(nil, "items")
	slot := src.Slot()
	require.Equal(t, []string{"items"}, published(slot))

	src = e.setupSource(nil, "items", "more")
	require.Equal(t, []string{"items", "more"}, published(slot))
	s := startStream(t, src, streamOpts{ack: true})
	e.exec("INSERT INTO more (id, name, n) VALUES (1, 'a', 1)")
	e.exec("INSERT INTO items (id, name, n) VALUES (2, 'b', 2)")
	got := s.next(2)
	require.Equal(t, "more", got[0].Table.Name)
	require.Equal(t, "items", got[1].Table.Name)
	require.NoError(t, s.stop())

	src = e.setupSource(nil, "more")
	require.Equal(t, []string{"more"}, published(slot))
	s = startStream(t, src, streamOpts{ack: true})
	e.exec("INSERT INTO items (id, name, n) VALUES (3, 'c', 3)")
	e.exec("INSERT INTO more (id, name, n) VALUES (4, 'd', 4)")
	for { // changes acknowledged just before the restart may come again
		c := s.next(1)[0]
		require.NotEqual(t, int64(3), idOf(t, c), "a table no longer published is not captured")
		if idOf(t, c) == 4 {
			break
		}
	}
	require.NoError(t, s.stop())
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	_, err := pglogical.New(t.Context(), pglogical.Config{Sync: "-", Tables: []duplex.Table{{Name: "x"}}})
	require.Error(t, err)
	for _, f := range []string{"ConnString", "Sync", "System", "Tables"} {
		require.ErrorContains(t, err, f)
	}
	_, err = pglogical.New(t.Context(), pglogical.Config{ConnString: "postgres://%zz", Sync: "s", System: "a", Tables: []duplex.Table{{Schema: "public", Name: "x"}}})
	require.ErrorContains(t, err, "invalid connection string")
	require.True(t, duplex.IsPermanent(err))
	require.Equal(t, "duplex_my_sync__crm", pglogical.SlotName("My Sync", "CRM"))
	long := pglogical.SlotName(strings.Repeat("x", 100), "y")
	require.LessOrEqual(t, len(long), 63)
	require.NotEqual(t, long, pglogical.SlotName(strings.Repeat("x", 100), "z"), "shortened names stay distinct")
}
