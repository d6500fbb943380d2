package applypg_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/internal/testenv"
)

// TestRunsKeepOrder: writes to one key repeat within a batch (a bulk
// statement cannot write a row twice), and an update moves a row to a new
// key that a later write uses; every method applies them in order.
func TestRunsKeepOrder(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	for _, m := range methods {
		t.Run(m.String(), func(t *testing.T) {
			t.Parallel()
			table := duplex.Table{Schema: "public", Name: "items_" + m.String()}
			exec(t, db, fmt.Sprintf("CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, n bigint NOT NULL CHECK (n >= 0), note text)", table.Name))
			a := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Method = m })
			k := func(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }
			var ws []duplex.Write
			seq := 0
			add := func(w duplex.Write) {
				seq++
				w.Table = table
				w.Change = &duplex.Change{ID: fmt.Sprintf("%s/%d", m, seq)}
				ws = append(ws, w)
			}
			last := map[int64]int64{}
			for id := int64(1); id <= 5; id++ {
				add(duplex.Write{Op: duplex.OpInsert, Key: k(id), Set: duplex.Values{"id": id, "name": "r", "n": int64(0), "note": nil}})
			}
			for i := int64(1); i <= 100; i++ {
				id := i%5 + 1
				add(duplex.Write{Op: duplex.OpUpdate, Key: k(id), Set: duplex.Values{"n": i}, Expect: duplex.Values{"n": last[id]}})
				last[id] = i
			}
			// delete, insert again, update, delete, insert: one key.
			add(duplex.Write{Op: duplex.OpDelete, Key: k(1), Expect: duplex.Values{"n": last[1]}})
			add(duplex.Write{Op: duplex.OpInsert, Key: k(1), Set: duplex.Values{"id": int64(1), "name": "again", "n": int64(7), "note": "x"}})
			add(duplex.Write{Op: duplex.OpUpdate, Key: k(1), Set: duplex.Values{"note": "y"}, Expect: duplex.Values{"note": "x"}})
			add(duplex.Write{Op: duplex.OpDelete, Key: k(1)})
			add(duplex.Write{Op: duplex.OpInsert, Key: k(1), Set: duplex.Values{"id": int64(1), "name": "third", "n": int64(8), "note": nil}})
			// Key changes: 2 -> 20 -> 21, then 21's name.
			add(duplex.Write{Op: duplex.OpUpdate, Key: k(2), Set: duplex.Values{"id": int64(20)}})
			add(duplex.Write{Op: duplex.OpUpdate, Key: k(20), Set: duplex.Values{"id": int64(21)}})
			add(duplex.Write{Op: duplex.OpUpdate, Key: k(21), Set: duplex.Values{"name": "moved"}, Expect: duplex.Values{"name": "r"}})
			require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Checkpoint: "1", Writes: ws}))

			rows, err := a.Lookup(ctx, table, []duplex.Key{k(1), k(2), k(3), k(4), k(5), k(21)})
			require.NoError(t, err)
			require.Equal(t, duplex.Values{"id": int64(1), "name": "third", "n": int64(8), "note": nil}, rows[0])
			require.Nil(t, rows[1])
			for i, id := range []int64{3, 4, 5} {
				require.Equal(t, last[id], rows[2+i]["n"], "key %d got its last update", id)
			}
			require.Equal(t, duplex.Values{"id": int64(21), "name": "moved", "n": last[2], "note": nil}, rows[5])
			require.Equal(t, len(ws), count(t, db, "SELECT count(*) FROM duplex.applied WHERE change_id LIKE $1", m.String()+"/%"))
		})
	}
}

func withGen(r duplex.Values, gen int64) duplex.Values {
	r["gen"] = gen
	return r
}

// TestAwkwardTables: quoted identifiers everywhere (names of the Applier's
// own SQL aliases too), a composite key given in another order, an
// identity key, a generated column, a partitioned table.
func TestAwkwardTables(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	exec(t, db, `CREATE SCHEMA "Odd ""Schema""";
		CREATE TABLE "Odd ""Schema"""."Ta ble" (
			"Tenant" text, "select" int, "ord" text, "p1" text, "k1" text, "v" text, "t" text, "w" text, "u" text,
			"gen" int GENERATED ALWAYS AS ("select" * 2) STORED,
			PRIMARY KEY ("select", "Tenant"));
		CREATE TABLE ident (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
		CREATE TABLE parted (region text, id int, name text, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
		CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
		CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');`)
	odd := duplex.Table{Schema: `Odd "Schema"`, Name: "Ta ble"}
	for _, m := range methods {
		t.Run(m.String(), func(t *testing.T) {
			exec(t, db, `TRUNCATE "Odd ""Schema"""."Ta ble", ident, parted`)
			a := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Method = m })
			key := func(tenant string, sel int64) duplex.Key {
				return duplex.Key{{Name: "Tenant", Value: tenant}, {Name: "select", Value: sel}} // not the catalog's order
			}
			row := func(tenant string, sel int64, s string) duplex.Values {
				return duplex.Values{"Tenant": tenant, "select": sel, "ord": s, "p1": s, "k1": s, "v": s, "t": s, "w": s, "u": s, "gen": int64(-1)}
			}
			var ws []duplex.Write
			for i := range int64(6) {
				tenant := []string{"a", `b"'\`}[i%2]
				ws = append(ws, duplex.Write{Op: duplex.OpInsert, Table: odd, Key: key(tenant, i), Set: row(tenant, i, fmt.Sprint(i))})
			}
			ws = append(ws,
				duplex.Write{Op: duplex.OpUpdate, Table: odd, Key: key("a", 0), Set: duplex.Values{"ord": "x", "v": "y"}, Expect: duplex.Values{"ord": "0", "w": "0"}},
				duplex.Write{Op: duplex.OpDelete, Table: odd, Key: key(`b"'\`, 1), Expect: withGen(row(`b"'\`, 1, "1"), 2)},
				duplex.Write{Op: duplex.OpInsert, Table: duplex.Table{Schema: "public", Name: "ident"}, Key: duplex.Key{{Name: "id", Value: int64(42)}},
					Set: duplex.Values{"id": int64(42), "name": "kept id"}},
				duplex.Write{Op: duplex.OpInsert, Table: duplex.Table{Schema: "public", Name: "parted"}, Key: duplex.Key{{Name: "region", Value: "eu"}, {Name: "id", Value: int64(1)}},
					Set: duplex.Values{"region": "eu", "id": int64(1), "name": "e"}},
				duplex.Write{Op: duplex.OpInsert, Table: duplex.Table{Schema: "public", Name: "parted"}, Key: duplex.Key{{Name: "region", Value: "us"}, {Name: "id", Value: int64(1)}},
					Set: duplex.Values{"region": "us", "id": int64(1), "name": "u"}},
			)
			require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Writes: ws}))
			got, err := a.Lookup(ctx, odd, []duplex.Key{key("a", 0), key(`b"'\`, 1), key(`b"'\`, 3), {{Name: "select", Value: int64(4)}, {Name: "Tenant", Value: "a"}}})
			require.NoError(t, err)
			want0 := row("a", 0, "0")
			want0["ord"], want0["v"], want0["gen"] = "x", "y", int64(0)
			require.Equal(t, want0, got[0])
			require.Nil(t, got[1])
			want3 := row(`b"'\`, 3, "3")
			want3["gen"] = int64(6)
			require.Equal(t, want3, got[2])
			require.Equal(t, "4", got[3]["ord"])
			require.Equal(t, 1, count(t, db, "SELECT count(*) FROM ident WHERE id = 42 AND name = 'kept id'"))
			require.Equal(t, 1, count(t, db, "SELECT count(*) FROM parted_eu"))
			require.Equal(t, 1, count(t, db, "SELECT count(*) FROM parted_us"))

			// A stale expectation in the odd table.
			err = a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{
				{Op: duplex.OpUpdate, Table: odd, Key: key("a", 2), Set: duplex.Values{"u": "z"}, Expect: duplex.Values{"u": "not 2"}}}})
			require.ErrorIs(t, err, duplex.ErrStale)
			// A key that does not match the primary key.
			err = a.Apply(ctx, &duplex.Batch{Source: "a", Writes: []duplex.Write{
				{Op: duplex.OpDelete, Table: odd, Key: duplex.Key{{Name: "select", Value: int64(1)}}}}})
			require.True(t, duplex.IsPermanent(err), "%v", err)
			require.ErrorContains(t, err, "does not match the primary key")
		})
	}
}
