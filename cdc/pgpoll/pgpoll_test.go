package pgpoll_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/cdctest"
	"github.com/duplexsync/duplex/cdc/pgpoll"
	"github.com/duplexsync/duplex/internal/testenv"
)

// TestEqualTimestampsAcrossPages: rows sharing one timestamp, more than a
// page of them, all arrive once, in pages of at most PageSize.
func TestEqualTimestampsAcrossPages(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *pgpoll.Config) { c.PageSize = 4 })
	const rows = 25
	_, err := h.db.Pool.Exec(t.Context(), "INSERT INTO items (id, name, n, updated_at) SELECT i, 'same', i, '2026-01-01 00:00:00+00' FROM generate_series(1, $1::int) i", rows)
	require.NoError(t, err)
	// And one later row, so that the watermark moves past the shared
	// timestamp while the source runs.
	c := consume(t, h.newSource(), "", true)
	got := c.waitFor(rows)
	require.NoError(t, h.Insert(t.Context(), rows+1, "later", 0))
	got = c.waitFor(rows + 1)
	all := c.stop()
	require.Len(t, all, rows+1, "each row exactly once")
	seen := map[int64]bool{}
	for i, ch := range got {
		id := ch.Key[0].Value.(int64)
		require.False(t, seen[id], "id=%d delivered twice", id)
		seen[id] = true
		require.Equal(t, duplex.OpInsert, ch.Op)
		if i < rows {
			require.Equal(t, int64(i+1), id, "rows sharing a timestamp arrive in key order")
			require.True(t, ch.CommitTime.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), "CommitTime is the row's timestamp")
		}
	}
	for _, n := range c.batches {
		require.LessOrEqual(t, n, 4, "batches are bounded by PageSize")
	}
}

// TestTombstoneDeletes: with DeletesTombstones, Setup installs the trigger,
// a delete arrives with the last-emitted image as Before, and its
// tombstone is dropped once acknowledged.
func TestTombstoneDeletes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *pgpoll.Config) { c.DeleteDetection = pgpoll.DeletesTombstones })
	var triggers int
	require.NoError(t, h.db.Pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_trigger WHERE tgname = $1 AND tgrelid = 'items'::regclass",
		pgpoll.TriggerName(h.sync, "a")).Scan(&triggers))
	require.Equal(t, 1, triggers, "tombstone trigger installed")

	ctx := t.Context()
	c := consume(t, h.newSource(), "", true)
	for id := int64(1); id <= 3; id++ {
		require.NoError(t, h.Insert(ctx, id, "row", id))
	}
	c.waitFor(3)
	require.NoError(t, h.Update(ctx, 2, duplex.Values{"note": "last"}))
	c.waitFor(4)
	require.NoError(t, h.Delete(ctx, 2))
	// Deleted before the source could see it (one transaction): a
	// tombstone, but no change at all.
	require.NoError(t, h.Tx(ctx, func(w cdctest.Writer) error {
		if err := w.Insert(ctx, 9, "short-lived", 0); err != nil {
			return err
		}
		return w.Delete(ctx, 9)
	}))
	require.NoError(t, h.Insert(ctx, 4, "after", 4))
	// A pass may read the new row before it drains the tombstones: wait
	// for both.
	got := c.waitUntil("the delete and the insert after it", func(got []duplex.Change) bool {
		var inserted, deleted bool
		for _, ch := range got {
			inserted = inserted || ch.Key[0].Value == int64(4)
			deleted = deleted || ch.Op == duplex.OpDelete
		}
		return inserted && deleted
	})
	var del *duplex.Change
	for i, ch := range got {
		require.NotEqual(t, int64(9), ch.Key[0].Value, "a row never seen alive produces no change")
		if ch.Op == duplex.OpDelete {
			require.Nil(t, del, "one delete")
			del = &got[i]
		}
	}
	require.NotNil(t, del, "delete delivered")
	require.Equal(t, duplex.Key{{Name: "id", Value: int64(2)}}, del.Key)
	require.Nil(t, del.After)
	require.Equal(t, "last", del.Before["note"], "Before is the last emitted image")
	require.Equal(t, int64(2), del.Before["n"])
	waitCount(t, h, "SELECT count(*) FROM duplex.poll_tombstones WHERE sync = $1", 0)
	waitCount(t, h, "SELECT count(*) FROM duplex.poll_rows WHERE sync = $1 AND key = '[\"2\"]'", 0)
	c.stop()
}

// TestKeyDiffDeletes: with DeletesKeyDiff there is no trigger; deletes of
// rows acknowledged in an earlier run (known from poll_rows only) and of
// rows emitted but not yet acknowledged are both found.
func TestKeyDiffDeletes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *pgpoll.Config) {
		c.DeleteDetection = pgpoll.DeletesKeyDiff
		c.KeyDiffEvery = 10 * time.Millisecond
	})
	var triggers int
	require.NoError(t, h.db.Pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal AND tgname LIKE 'duplex%'").Scan(&triggers))
	require.Zero(t, triggers, "no trigger without DeletesTombstones")
	ctx := t.Context()
	for id := int64(1); id <= 3; id++ {
		require.NoError(t, h.Insert(ctx, id, "row", id))
	}
	c1 := consume(t, h.newSource(), "", true)
	waitStored(t, h, c1.waitFor(3)[2].Position)
	c1.stop()

	// A new run: rows 1..3 are known from poll_rows only.
	c2 := consume(t, h.newSource(), "", false)
	require.NoError(t, h.Insert(ctx, 4, "unacked", 4))
	c2.waitFor(1)
	require.NoError(t, h.Delete(ctx, 1))
	require.NoError(t, h.Delete(ctx, 4))
	got := c2.waitFor(3)
	c2.stop()
	require.Len(t, got, 3, "the insert of 4 and two deletes")
	dels := map[int64]duplex.Values{}
	for _, ch := range got[1:] {
		require.Equal(t, duplex.OpDelete, ch.Op)
		dels[ch.Key[0].Value.(int64)] = ch.Before
	}
	require.Equal(t, "row", dels[1]["name"], "Before of a row known from poll_rows")
	require.Equal(t, "unacked", dels[4]["name"], "Before of a row emitted but not acknowledged")
}

// TestRestartResumesFromStoredWatermark: Ack stores the watermark, the
// images and the position; a new source resumes there: it delivers only
// what changed since, with Before from the stored images.
func TestRestartResumesFromStoredWatermark(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := t.Context()
	for id := int64(1); id <= 10; id++ {
		require.NoError(t, h.Insert(ctx, id, "row", id))
	}
	c1 := consume(t, h.newSource(), "", true)
	first := c1.waitFor(10)
	waitStored(t, h, first[9].Position)
	c1.stop()

	var pos, ts string
	require.NoError(t, h.db.Pool.QueryRow(ctx, "SELECT position FROM duplex.poll_position WHERE sync = $1", h.sync).Scan(&pos))
	require.Equal(t, string(first[9].Position), pos, "the last acknowledged position is stored")
	require.NoError(t, h.db.Pool.QueryRow(ctx, "SELECT ts FROM duplex.poll_watermark WHERE sync = $1 AND tbl = 'public.items'", h.sync).Scan(&ts))
	var past bool
	require.NoError(t, h.db.Pool.QueryRow(ctx, "SELECT $1::timestamptz >= (SELECT max(updated_at) FROM items WHERE id <= 10)", ts).Scan(&past))
	require.True(t, past, "the stored watermark %s is past the acknowledged rows", ts)

	require.NoError(t, h.Update(ctx, 3, duplex.Values{"n": int64(30)}))
	require.NoError(t, h.Insert(ctx, 11, "new", 11))
	c2 := consume(t, h.newSource(), "", true)
	got := c2.waitFor(2)
	// Give a redelivery of the acknowledged rows a chance to show up.
	require.NoError(t, h.Insert(ctx, 12, "sentinel", 12))
	got = c2.waitFor(3)
	c2.stop()
	require.Len(t, got, 3, "only what changed since the acknowledged position")
	require.Equal(t, duplex.OpUpdate, got[0].Op)
	require.Equal(t, int64(3), got[0].Before["n"], "Before is the stored image")
	require.Equal(t, int64(30), got[0].After["n"])
	require.Equal(t, duplex.OpInsert, got[1].Op)
	require.Greater(t, pgpoll.ComparePositions(got[0].Position, first[9].Position), 0, "positions continue after the stored one")
}

// TestSetupValidates: errors name the table and column at fault.
func TestSetupValidates(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), `
		CREATE TABLE nokey (id int, updated_at timestamptz);
		CREATE TABLE nocol (id int PRIMARY KEY);
		CREATE TABLE badcol (id int PRIMARY KEY, updated_at text)`)
	require.NoError(t, err)
	cases := map[string]string{
		"missing": "pgpoll: table public.missing does not exist",
		"nokey":   "pgpoll: table public.nokey has no primary key",
		"nocol":   "pgpoll: table public.nocol has no column updated_at",
		"badcol":  "pgpoll: table public.badcol column updated_at is text, want timestamp or timestamptz",
	}
	for table, want := range cases {
		src, err := pgpoll.New(t.Context(), pgpoll.Config{ConnString: db.URL, Sync: "s", System: "a",
			Tables: []duplex.Table{{Schema: "public", Name: table}}, Logger: logger(t)})
		require.NoError(t, err)
		err = src.Setup(t.Context())
		src.Close()
		require.ErrorContains(t, err, want)
		require.True(t, duplex.IsPermanent(err), "%v is permanent", err)
	}
	_, err = pgpoll.New(t.Context(), pgpoll.Config{})
	require.ErrorContains(t, err, "ConnString")
	require.ErrorContains(t, err, "Sync")
	require.ErrorContains(t, err, "Tables")
}

// waitCount polls query (with $1 = the sync) until it returns want.
func waitCount(t *testing.T, h *harness, query string, want int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		var n int
		require.NoError(t, h.db.Pool.QueryRow(context.Background(), query, h.sync).Scan(&n))
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", query, n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitStored waits until the source stored p as acknowledged.
func waitStored(t *testing.T, h *harness, p duplex.Position) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		var got string
		err := h.db.Pool.QueryRow(context.Background(), "SELECT position FROM duplex.poll_position WHERE sync = $1", h.sync).Scan(&got)
		if err == nil && pgpoll.ComparePositions(duplex.Position(got), p) >= 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("position %s not stored (stored %q, %v)", p, got, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFromAheadOfStoredState: Stream(from) with a from the stored state
// has not reached (the target's checkpoint is ahead of the last Ack). When
// the replay up to from is the same sequence, nothing at or before from
// comes again (cdctest's ResumeFromPosition); when it differs (a row
// changed meanwhile), the replayed changes come again, after from, with the
// IDs they had, so that dedup drops those already settled.
func TestFromAheadOfStoredState(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := t.Context()
	for id := int64(1); id <= 3; id++ {
		require.NoError(t, h.Insert(ctx, id, "row", id))
	}
	c1 := consume(t, h.newSource(), "", false)
	first := c1.waitFor(3)
	c1.stop()

	require.NoError(t, h.Update(ctx, 1, duplex.Values{"n": int64(10)}))
	from := first[2].Position
	c2 := consume(t, h.newSource(), from, false)
	got := c2.waitFor(3)
	c2.stop()
	require.Len(t, got, 3, "the replay, delivered again")
	ids := map[string]bool{first[1].ID: true, first[2].ID: true}
	for _, ch := range got {
		require.Greater(t, pgpoll.ComparePositions(ch.Position, from), 0, "%s comes after from", &ch)
		if ch.Key[0].Value == int64(1) {
			require.Equal(t, int64(10), ch.After["n"])
			continue
		}
		require.True(t, ids[ch.ID], "%s keeps the ID it had", &ch)
	}
}

// TestAckOfUnknownPosition: an Ack of a position the source never
// delivered is an error; of one at or before the stored state, a no-op.
func TestAckOfUnknownPosition(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	require.NoError(t, h.Insert(t.Context(), 1, "row", 1))
	src := h.newSource()
	c := consume(t, src, "", false)
	got := c.waitFor(1)
	require.NoError(t, src.Ack(t.Context(), got[0].Position))
	require.NoError(t, src.Ack(t.Context(), got[0].Position), "again: nothing to do")
	require.ErrorContains(t, src.Ack(t.Context(), "00000000000000000099-0000000000000000"), "not a position this source delivered")
	require.ErrorContains(t, src.Ack(t.Context(), "garbage"), "invalid position")
	c.stop()
}

// TestImagesRoundTrip: the image stored in poll_rows decodes, as Before of
// a later update (after a restart, so it comes from the database), to the
// same Go values and types as the After the source emitted first.
func TestImagesRoundTrip(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	_, err := db.Pool.Exec(ctx, `CREATE TABLE typed (
		id int PRIMARY KEY, b bool, i2 smallint, f8 float8, num numeric(10,3), t text, by bytea, j jsonb, u uuid,
		ts timestamp, arr text[], iv interval, nul text, quote text,
		updated_at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO typed (id, b, i2, f8, num, t, by, j, u, ts, arr, iv, quote) VALUES
		(1, true, 7, 1.5, 12.345, 'héllo', '\x00ff', '{"a": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		 '2026-01-02 03:04:05.678', '{x,"y z"}', '1 day 02:00', 'say "hi"\n')`)
	require.NoError(t, err)
	sync := testenv.UniqueName(t, "s")
	cfg := pgpoll.Config{ConnString: db.URL, Sync: sync, System: "a", Tables: []duplex.Table{{Schema: "public", Name: "typed"}},
		Interval: 5 * time.Millisecond, Logger: logger(t)}
	newSrc := func() *pgpoll.Source {
		src, err := pgpoll.New(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(src.Close)
		return src
	}
	h := &harness{t: t, db: db, sync: sync}
	c1 := consume(t, newSrc(), "", true)
	ins := c1.waitFor(1)[0]
	waitStored(t, h, ins.Position)
	c1.stop()

	_, err = db.Pool.Exec(ctx, "UPDATE typed SET i2 = 8, updated_at = clock_timestamp() WHERE id = 1")
	require.NoError(t, err)
	c2 := consume(t, newSrc(), "", false)
	upd := c2.waitFor(1)[0]
	c2.stop()
	require.Equal(t, duplex.OpUpdate, upd.Op)
	require.Len(t, upd.Before, len(ins.After))
	for col, want := range ins.After {
		got, ok := upd.Before[col]
		require.True(t, ok, "column %s in Before", col)
		require.IsType(t, want, got, "column %s", col)
		require.True(t, duplex.Equal(want, got), "column %s: %#v, want %#v", col, got, want)
	}
	require.Nil(t, upd.Before["nul"])
	require.Equal(t, int64(7), upd.Before["i2"])
	require.Equal(t, int64(8), upd.After["i2"])
	require.Equal(t, true, ins.After["b"])
	require.Equal(t, []byte{0, 0xff}, ins.After["by"])
}
