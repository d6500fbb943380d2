package duplex_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/crashpoint"
	"github.com/duplexsync/duplex/memdb"
	"github.com/duplexsync/duplex/resolve"
)

// The crash-point kit: a two-way Sync is stopped dead at one of the commits
// of its merges (before it, or right after it, with nothing of the process
// going on), edited further, restarted, and checked against an oracle that
// replays every user edit exactly once.

// crashWorld is two systems and the edits users made to them, with the
// oracle of what both must hold once everything is synced.
type crashWorld struct {
	a, b *memdb.DB
	want map[int64]duplex.Values // nil: the row must not exist
	one  map[int64]bool          // keys only one side ever edits
	dlq  *deadLetters
}

func newCrashWorld(t *testing.T, keys int) *crashWorld {
	w := &crashWorld{a: newDB(t, "a", false), b: newDB(t, "b", false), want: map[int64]duplex.Values{}, one: map[int64]bool{}, dlq: &deadLetters{}}
	for id := int64(1); id <= int64(keys); id++ {
		row := duplex.Values{"id": id, "name": fmt.Sprint("c", id), "n": int64(0), "note": nil}
		for _, db := range []*memdb.DB{w.a, w.b} {
			require.NoError(t, db.Do("duplex", func(tx *memdb.Tx) error { return tx.Insert(customers, row.Clone()) }))
		}
		w.want[id] = row
	}
	for _, db := range []*memdb.DB{w.a, w.b} {
		require.NoError(t, db.AgreeRows(customers))
	}
	// Rows both held, differently, before the sync started (no record):
	// a edits note; b's name, an edit of b the sync never saw as a change,
	// is kept and written back to a. Nothing on b's side is on its way, so
	// only the merge of a's change (and its redelivery after a crash before
	// the write-back) brings b's name to a.
	for id := int64(1001); id <= 1003; id++ {
		for _, db := range []*memdb.DB{w.a, w.b} {
			row := duplex.Values{"id": id, "name": db.Name() + "-own", "n": int64(0), "note": nil}
			require.NoError(t, db.Do("duplex", func(tx *memdb.Tx) error { return tx.Insert(customers, row) }))
		}
		require.NoError(t, w.a.Update(customers, key(id), duplex.Values{"note": "a-edit"}))
		w.want[id] = duplex.Values{"id": id, "name": "b-own", "n": int64(0), "note": "a-edit"}
		w.one[id] = true
	}
	return w
}

func (w *crashWorld) db(side int) *memdb.DB {
	if side == 0 {
		return w.a
	}
	return w.b
}

// edits makes n random user edits: keys with an odd id are edited by one
// side only (id%4 == 1: a, id%4 == 3: b), names, notes, counter increments,
// deletes and new keys; keys with an even id get counter increments from
// both sides (CounterDelta adds them).
func (w *crashWorld) edits(t *testing.T, rnd *rand.Rand, n int, keys int) {
	for range n {
		id := int64(1 + rnd.IntN(keys+4)) // a few new keys past the seeded ones
		side := rnd.IntN(2)
		if id%2 == 1 {
			side = int(id % 4 / 2) // 1 -> a, 3 -> b
			w.one[id] = true
		}
		db := w.db(side)
		cur := db.Get(customers, key(id))
		switch {
		case cur == nil && id%2 == 1:
			row := duplex.Values{"id": id, "name": fmt.Sprint("new", id), "n": int64(1), "note": nil}
			require.NoError(t, db.Insert(customers, row.Clone()))
			w.want[id] = row
		case cur == nil:
			continue // both-sided keys are never deleted or inserted
		case id%2 == 0:
			d := int64(1 + rnd.IntN(5))
			require.NoError(t, db.Update(customers, key(id), duplex.Values{"n": cur["n"].(int64) + d}))
			w.want[id]["n"] = w.want[id]["n"].(int64) + d
		default:
			switch rnd.IntN(4) {
			case 0:
				v := fmt.Sprint("name", rnd.IntN(1000))
				require.NoError(t, db.Update(customers, key(id), duplex.Values{"name": v}))
				w.want[id]["name"] = v
			case 1:
				v := fmt.Sprint("note", rnd.IntN(1000))
				require.NoError(t, db.Update(customers, key(id), duplex.Values{"note": v}))
				w.want[id]["note"] = v
			case 2:
				require.NoError(t, db.Update(customers, key(id), duplex.Values{"n": cur["n"].(int64) + 1}))
				w.want[id]["n"] = w.want[id]["n"].(int64) + 1
			default:
				require.NoError(t, db.Delete(customers, key(id)))
				w.want[id] = nil
			}
		}
	}
}

// run runs a Sync of the two systems until both are idle, or until the
// crasher kills it (at == 0: never). It returns the number of Apply calls.
func (w *crashWorld) run(t *testing.T, at int, after bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := crashpoint.New()
	if at > 0 {
		c.Arm(at, after, cancel)
	}
	endpoint := func(db *memdb.DB) duplex.Endpoint {
		return duplex.Endpoint{
			Name:    db.Name(),
			Source:  db.Source(memdb.SourceConfig{Slot: "sync", SkipOrigins: []string{"duplex"}, StopWhenIdle: true}),
			Applier: c.Wrap(db.Applier("duplex")),
		}
	}
	opts := fastOptions()
	opts.BatchSize = 3 // many chunks: crashes land mid-stream too
	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name: "crash", A: endpoint(w.a), B: endpoint(w.b),
		Resolver:    resolve.CounterDelta("n"),
		DeadLetters: w.dlq, Logger: testLogger(t), Options: opts,
	})
	require.NoError(t, err)
	err = s.Run(ctx)
	select {
	case <-c.Dead():
	default:
		require.NoError(t, err)
		require.NoError(t, ctx.Err(), "the sync did not finish in time")
	}
	return c.Calls()
}

// check is the oracle: both systems hold exactly the rows the users' edits
// make when each counts once, the records give the next merge the rows as
// its base, and nothing is
// in the DLQ (single-sided keys never conflict; the both-sided counters
// are added by CounterDelta).
func (w *crashWorld) check(t *testing.T, what string) {
	t.Helper()
	for id, want := range w.want {
		for _, db := range []*memdb.DB{w.a, w.b} {
			got := db.Get(customers, key(id))
			if want == nil {
				require.Nil(t, got, "%s: id=%d on %s: a deleted row came back", what, id, db.Name())
				continue
			}
			require.NotNil(t, got, "%s: id=%d missing on %s", what, id, db.Name())
			for f, v := range want {
				require.True(t, duplex.Equal(v, got[f]), "%s: id=%d on %s: %s = %v, want %v (row %v)", what, id, db.Name(), f, got[f], v, got)
			}
		}
		base, ok := agreedBase(t, w.a, w.b, id)
		require.True(t, ok, "%s: id=%d: no record", what, id)
		row := w.a.Get(customers, key(id))
		require.Equal(t, row == nil, base == nil, "%s: id=%d: the records' base %v, the row %v", what, id, base, row)
		for f, v := range row {
			require.True(t, duplex.Equal(v, base[f]), "%s: id=%d: the records' base has %s = %v, both systems %v", what, id, f, base[f], v)
		}
	}
	requireSameRows(t, w.a, w.b)
	for _, dl := range w.dlq.all() {
		t.Fatalf("%s: dead letter %s %s: %s (single-sided: %v)", what, dl.Direction, dl.Change.Key, dl.Error, w.one[dl.Change.Key[0].Value.(int64)])
	}
}

// crashScenario: edits, a run killed at call at (before or after its
// commit), more edits, a run to the end, the oracle.
func crashScenario(t *testing.T, seed uint64, at int, after bool) int {
	const keys = 8
	rnd := rand.New(rand.NewPCG(seed, 7))
	w := newCrashWorld(t, keys)
	w.edits(t, rnd, 30, keys)
	calls := w.run(t, at, after)
	w.edits(t, rnd, 10, keys)
	w.run(t, 0, false)
	w.check(t, fmt.Sprintf("seed %d, crash at apply %d (after commit: %v)", seed, at, after))
	return calls
}

// TestCrashAtEveryCommit kills a two-way Sync at every Apply of a workload,
// before and after the commit, and checks the oracle each time.
func TestCrashAtEveryCommit(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3} {
		n := crashScenario(t, seed, 0, false) // the number of commits without a crash
		require.Positive(t, n)
		for at := 1; at <= n; at++ {
			for _, after := range []bool{false, true} {
				crashScenario(t, seed, at, after)
			}
		}
	}
}

// TestCrashPointsProperty draws the workload and up to three crash points
// in a row, restarting after each.
func TestCrashPointsProperty(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(rt *rapid.T) {
		const keys = 8
		rnd := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 3))
		w := newCrashWorld(t, keys)
		w.edits(t, rnd, rapid.IntRange(5, 40).Draw(rt, "edits"), keys)
		for i := range rapid.IntRange(1, 3).Draw(rt, "crashes") {
			at := rapid.IntRange(1, 30).Draw(rt, fmt.Sprint("crash ", i))
			after := rapid.Bool().Draw(rt, fmt.Sprint("after commit ", i))
			w.run(t, at, after)
			w.edits(t, rnd, rapid.IntRange(0, 10).Draw(rt, fmt.Sprint("edits after crash ", i)), keys)
		}
		w.run(t, 0, false)
		w.check(t, "property")
	})
}
