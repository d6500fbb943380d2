package applypg_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/internal/testenv"
)

// stream runs src until until returns true for the changes received so
// far, and returns them.
func stream(t *testing.T, src *pglogical.Source, until func([]duplex.Change) bool) []duplex.Change {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan []duplex.Change, 16)
	done := make(chan error, 1)
	go func() {
		done <- src.Stream(ctx, "", func(ctx context.Context, b []duplex.Change) error {
			select {
			case got <- b:
			case <-ctx.Done():
			}
			return nil
		})
	}()
	var all []duplex.Change
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for !until(all) {
		select {
		case b := <-got:
			all = append(all, b...)
		case err := <-done:
			t.Fatalf("stream ended: %v", err)
		case <-timeout.C:
			t.Fatalf("timed out; got %d changes: %v", len(all), all)
		}
	}
	cancel()
	require.NoError(t, <-done)
	return all
}

func newSource(t *testing.T, db *testenv.DB, sync string, tables ...duplex.Table) *pglogical.Source {
	t.Helper()
	src, err := pglogical.New(t.Context(), pglogical.Config{
		ConnString: db.URL, Sync: sync, System: "b", Tables: tables, SetReplicaIdentity: true,
		Linger: time.Millisecond, StatusInterval: 50 * time.Millisecond, Logger: logger(t),
	})
	require.NoError(t, err)
	t.Cleanup(src.Close)
	require.NoError(t, src.Setup(t.Context(), false))
	return src
}

const itemsDDL = `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, n bigint NOT NULL CHECK (n >= 0), note text)`

var items = duplex.Table{Schema: "public", Name: "items"}

func ins(id int64, name string, n int64) duplex.Write {
	return duplex.Write{Op: duplex.OpInsert, Table: items, Key: duplex.Key{{Name: "id", Value: id}},
		Set:    duplex.Values{"id": id, "name": name, "n": n, "note": nil},
		Change: &duplex.Change{ID: fmt.Sprintf("ins/%d/%s/%d", id, name, n)}}
}

func upd(id int64, set, expect duplex.Values) duplex.Write {
	return duplex.Write{Op: duplex.OpUpdate, Table: items, Key: duplex.Key{{Name: "id", Value: id}}, Set: set, Expect: expect,
		Change: &duplex.Change{ID: fmt.Sprintf("upd/%d/%v", id, set)}}
}

func del(id int64) duplex.Write {
	return duplex.Write{Op: duplex.OpDelete, Table: items, Key: duplex.Key{{Name: "id", Value: id}},
		Change: &duplex.Change{ID: fmt.Sprintf("del/%d", id)}}
}

// TestOriginDropsEchoes: the source of the same sync on the same database
// drops every transaction the Applier made (inserts, updates, deletes,
// truncate), and delivers the users' writes made right after them.
func TestOriginDropsEchoes(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	ctx := t.Context()
	exec(t, db, itemsDDL)
	sync := testenv.UniqueName(t, "s")
	src := newSource(t, db, sync, items)
	for _, m := range []applypg.Method{applypg.MethodUnnest, applypg.MethodRows, applypg.MethodValues, applypg.MethodCopy} {
		a := newApplier(t, db, sync, func(c *applypg.Config) { c.Method = m })
		require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Checkpoint: "0/1", Writes: []duplex.Write{
			ins(1, "sync", 1), ins(2, "sync", 2), upd(1, duplex.Values{"n": int64(5)}, duplex.Values{"n": int64(1)}), del(2),
		}}))
		exec(t, db, "INSERT INTO items (id, name, n) VALUES (100, $1, 0)", m.String())
		require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{upd(1, duplex.Values{"note": "sync"}, nil)}}))
		exec(t, db, "UPDATE items SET name = $1 WHERE id = 1", "user after "+m.String())
		require.NoError(t, a.Truncate(ctx, items, &duplex.Change{ID: "truncate-" + t.Name()}))
		exec(t, db, "DELETE FROM items WHERE id = 100") // already gone: no change
		exec(t, db, "INSERT INTO items (id, name, n) VALUES (101, 'last', 0)")
		require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{del(101)}}))
	}
	exec(t, db, "INSERT INTO items (id, name, n) VALUES (999, 'end', 0)")

	got := stream(t, src, func(cs []duplex.Change) bool {
		return len(cs) > 0 && cs[len(cs)-1].Key.String() == "id=999"
	})
	var seen []string
	for _, c := range got {
		require.Empty(t, c.Origin, "no change made under an origin is delivered: %v", c)
		seen = append(seen, c.Op.String()+" "+c.Key.String())
	}
	var want []string
	for range 4 {
		// Per method: the user's insert, the user's update right after
		// the sync's, the user's insert after the truncate.
		want = append(want, "insert id=100", "update id=1", "insert id=101")
	}
	want = append(want, "insert id=999")
	require.Equal(t, want, seen)
	for i, m := range []applypg.Method{applypg.MethodUnnest, applypg.MethodRows, applypg.MethodValues, applypg.MethodCopy} {
		require.Equal(t, "user after "+m.String(), got[3*i+1].After["name"])
		require.Equal(t, "sync", got[3*i+1].After["note"], "the user's update carries the sync's earlier value")
	}
}

// TestOriginBusy: when another session holds the Applier's origin (a second
// process with the same configuration), Apply uses a per-connection origin,
// which the source drops too, and removes it afterwards.
func TestOriginBusy(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	ctx := t.Context()
	exec(t, db, itemsDDL)
	sync := testenv.UniqueName(t, "s")
	src := newSource(t, db, sync, items)
	a := newApplier(t, db, sync)

	holder, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", a.Origin())
	require.NoError(t, err)
	defer func() {
		_, err := holder.Exec(context.Background(), "SELECT pg_replication_origin_session_reset()")
		require.NoError(t, err)
		holder.Release()
	}()

	require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{ins(1, "sync", 1)}}))
	require.NoError(t, a.Truncate(ctx, items, &duplex.Change{ID: "truncate-" + t.Name()}))
	require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{ins(2, "sync", 1)}}))
	exec(t, db, "INSERT INTO items (id, name, n) VALUES (3, 'user', 0)")
	got := stream(t, src, func(cs []duplex.Change) bool { return len(cs) > 0 })
	require.Len(t, got, 1)
	require.Equal(t, "id=3", got[0].Key.String())

	var temps int
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE $1",
		a.Origin()+`\_#p%`).Scan(&temps))
	require.Zero(t, temps, "per-connection origins are dropped after use")
	requireClean(t, db)
}

// requireClean checks no session of db was left with a transaction open.
func requireClean(t *testing.T, db *testenv.DB) {
	t.Helper()
	// pg_stat_activity is updated asynchronously: a session that just ended
	// its transaction may still show it for a moment.
	var n int
	require.Eventually(t, func() bool {
		require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'`).Scan(&n))
		return n == 0
	}, 10*time.Second, 20*time.Millisecond, "sessions idle in transaction")
}

// TestLookupMatchesSource: Lookup and the logical replication source give
// every column the same Go value and type.
func TestLookupMatchesSource(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	ctx := t.Context()
	exec(t, db, typesDDL)
	ta := duplex.Table{Schema: "public", Name: "types_a"}
	sync := testenv.UniqueName(t, "s")
	src := newSource(t, db, sync, ta)
	for i, vals := range typesRows {
		exec(t, db, fmt.Sprintf("INSERT INTO types_a VALUES (%d, %s)", i+1, vals))
	}
	got := stream(t, src, func(cs []duplex.Change) bool { return len(cs) >= len(typesRows) })
	a := newApplier(t, db, sync)
	keys := make([]duplex.Key, len(got))
	for i, c := range got {
		keys[i] = c.Key
	}
	rows, err := a.Lookup(ctx, ta, keys)
	require.NoError(t, err)
	for i, c := range got {
		requireSameValues(t, c.After, rows[i], "row %s: source vs Lookup", c.Key)
	}
}
