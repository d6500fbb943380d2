package loopguard_test

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/loopguard"
)

var customers = duplex.Table{Schema: "public", Name: "customers"}

func key(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }

func row(id int64, name string) duplex.Values {
	return duplex.Values{"id": id, "name": name, "note": nil}
}

func update(id int64, after duplex.Values) *duplex.Change {
	return &duplex.Change{ID: "c" + strconv.FormatInt(id, 10), Table: customers, Key: key(id), Op: duplex.OpUpdate, After: after}
}

func del(id int64) *duplex.Change {
	return &duplex.Change{Table: customers, Key: key(id), Op: duplex.OpDelete, Before: row(id, "x")}
}

func echo(t *testing.T, h *loopguard.Hashes, c *duplex.Change) bool {
	t.Helper()
	ok, err := h.Echo(t.Context(), c)
	require.NoError(t, err)
	return ok
}

// clock is a manual clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestHashesEchoDroppedOnce(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{TTL: time.Minute})
	h.Remember(customers, key(1), row(1, "Ann"))
	require.True(t, echo(t, h, update(1, row(1, "Ann"))), "the sync's own write coming back")
	require.False(t, echo(t, h, update(1, row(1, "Ann"))), "a second change to the same values is the user's")
	require.Equal(t, 0, h.Len())
}

func TestHashesUserEditAfterSyncWrite(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{TTL: time.Minute})
	h.Remember(customers, key(1), row(1, "Ann"))
	require.True(t, echo(t, h, update(1, row(1, "Ann"))))
	require.False(t, echo(t, h, update(1, row(1, "Anne"))), "the user's edit right after the sync's must go through")

	// A user's change arriving before the echo supersedes the remembered
	// state: both pass.
	h.Remember(customers, key(2), row(2, "Bob"))
	require.False(t, echo(t, h, update(2, row(2, "Bobby"))))
	require.False(t, echo(t, h, update(2, row(2, "Bob"))))

	// So a user who edits a row the sync wrote, then sets it back, is never
	// dropped, even when the source does not report the echo on its own.
	h.Remember(customers, key(3), row(3, "Cy"))
	require.False(t, echo(t, h, update(3, row(3, "Cyd"))))
	require.False(t, echo(t, h, update(3, row(3, "Cy"))))
	require.Equal(t, 0, h.Len())
}

func TestHashesMatchesWholeRowAndKey(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{})
	h.Remember(customers, key(1), row(1, "Ann"))
	other := duplex.Table{Schema: "public", Name: "suppliers"}

	c := update(1, row(1, "Ann"))
	c.Table = other
	require.False(t, echo(t, h, c), "another table")
	require.False(t, echo(t, h, update(2, row(1, "Ann"))), "another key")
	partial := update(1, duplex.Values{"id": int64(1), "name": "Ann"})
	partial.Unchanged = []string{"note"}
	require.False(t, echo(t, h, partial), "an incomplete row is never taken for an echo")
	require.Equal(t, 1, h.Len(), "none of these were changes to the remembered row")

	extra := row(1, "Ann")
	extra["email"] = "a@example.com"
	require.False(t, echo(t, h, update(1, extra)), "another column")
	h.Remember(customers, key(1), row(1, "Ann"))
	require.False(t, echo(t, h, del(1)), "a delete")
	h.Remember(customers, key(1), row(1, "Ann"))

	// Key and values in other integer widths and field order are the same row.
	c = update(1, duplex.Values{"note": nil, "name": "Ann", "id": 1})
	c.Key = duplex.Key{{Name: "id", Value: int32(1)}}
	require.True(t, echo(t, h, c))
}

func TestHashesInsertAndDelete(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{})
	h.Remember(customers, key(1), nil) // the sync deleted row 1
	require.True(t, echo(t, h, del(1)))
	require.False(t, echo(t, h, del(1)))
	h.Remember(customers, key(1), nil)
	ins := update(1, row(1, "Ann"))
	ins.Op = duplex.OpInsert
	require.False(t, echo(t, h, ins), "a user's insert of a deleted key")

	h.Remember(customers, key(2), row(2, "Bob")) // the sync inserted row 2
	ins = update(2, row(2, "Bob"))
	ins.Op = duplex.OpInsert
	require.True(t, echo(t, h, ins))
}

func TestHashesSeveralPendingStates(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{})
	// Each write's echo arrives in order.
	h.Remember(customers, key(1), row(1, "v1"))
	h.Remember(customers, key(1), row(1, "v2"))
	h.Remember(customers, key(1), row(1, "v1"))
	require.True(t, echo(t, h, update(1, row(1, "v1"))))
	require.True(t, echo(t, h, update(1, row(1, "v2"))))
	require.True(t, echo(t, h, update(1, row(1, "v1"))))
	require.False(t, echo(t, h, update(1, row(1, "v1"))))

	// A poll sees only the last state: the older ones are consumed with it.
	h.Remember(customers, key(2), row(2, "v1"))
	h.Remember(customers, key(2), row(2, "v2"))
	require.True(t, echo(t, h, update(2, row(2, "v2"))))
	require.False(t, echo(t, h, update(2, row(2, "v1"))), "v1 is older than the state the source reached")

	// Writing the same state twice in a row expects one echo.
	h.Remember(customers, key(3), row(3, "same"))
	h.Remember(customers, key(3), row(3, "same"))
	require.True(t, echo(t, h, update(3, row(3, "same"))))
	require.False(t, echo(t, h, update(3, row(3, "same"))))

	// At most MaxPending states per row; the oldest go first.
	for _, k := range []int64{4, 5} {
		for i := range loopguard.MaxPending + 2 {
			h.Remember(customers, key(k), row(k, "s"+strconv.Itoa(i)))
		}
	}
	require.True(t, echo(t, h, update(4, row(4, "s2"))), "the oldest kept")
	require.False(t, echo(t, h, update(5, row(5, "s1"))), "forgotten")
}

func TestHashesTTL(t *testing.T) {
	t.Parallel()
	clk := newClock()
	h := loopguard.NewHashes(loopguard.HashesConfig{TTL: 30 * time.Second, Now: clk.Now})
	h.Remember(customers, key(1), row(1, "Ann"))
	h.Remember(customers, key(2), row(2, "Bob"))
	clk.Advance(29 * time.Second)
	require.True(t, echo(t, h, update(1, row(1, "Ann"))), "within the TTL")
	clk.Advance(time.Second)
	require.False(t, echo(t, h, update(2, row(2, "Bob"))), "the TTL is over: a user's change to the same values goes through")
	require.Equal(t, 0, h.Len())

	// Each state waits for its echo from when it was remembered.
	for _, k := range []int64{3, 4} {
		h.Remember(customers, key(k), row(k, "a"))
	}
	clk.Advance(20 * time.Second)
	for _, k := range []int64{3, 4} {
		h.Remember(customers, key(k), row(k, "b"))
	}
	clk.Advance(15 * time.Second)
	require.False(t, echo(t, h, update(3, row(3, "a"))), "expired")
	require.True(t, echo(t, h, update(4, row(4, "b"))), "not yet expired")
}

func TestHashesCapacity(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{Capacity: 2})
	h.Remember(customers, key(1), row(1, "a"))
	h.Remember(customers, key(2), row(2, "b"))
	h.Remember(customers, key(1), row(1, "a2")) // 1 is now the most recent
	h.Remember(customers, key(3), row(3, "c"))  // forgets 2
	require.Equal(t, 2, h.Len())
	require.False(t, echo(t, h, update(2, row(2, "b"))))
	require.True(t, echo(t, h, update(1, row(1, "a2"))))
	require.True(t, echo(t, h, update(3, row(3, "c"))))
}

func TestHashesConcurrent(t *testing.T) {
	t.Parallel()
	h := loopguard.NewHashes(loopguard.HashesConfig{Capacity: 1000, TTL: time.Hour})
	const workers, each = 8, 200
	var wg sync.WaitGroup
	var echoes atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := int64(w*each + i)
				h.Remember(customers, key(id), row(id, "x"))
				if ok, err := h.Echo(t.Context(), update(id, row(id, "x"))); err == nil && ok {
					echoes.Add(1)
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(workers*each), echoes.Load())
	require.Equal(t, 0, h.Len())
}

func BenchmarkHash(b *testing.B) {
	r := duplex.Values{
		"id": int64(42), "name": "Ann Example", "email": "ann@example.com", "note": nil,
		"active": true, "balance": 12.5, "updated_at": time.Now(), "blob": []byte("0123456789abcdef"),
	}
	for b.Loop() {
		loopguard.Hash(r)
	}
}
