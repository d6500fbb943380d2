package resolve_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

// propConfig is a resolver set-up the properties run under.
type propConfig struct {
	name     string
	resolver func(t *testing.T) duplex.Resolver
	opts     []pairOption
	stamp    bool // user edits set ts to their time, as an updated_at column
}

func farFuture() time.Time { return epoch.Add(1000 * time.Hour) }

func propConfigs() []propConfig {
	mustAuth := func(t *testing.T, spec string) *resolve.Authority {
		a, err := resolve.ParseAuthority(spec)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	return []propConfig{
		{name: "default", resolver: func(*testing.T) duplex.Resolver { return nil }},
		{name: "side_wins_a", resolver: func(*testing.T) duplex.Resolver { return resolve.SideWins("a") }},
		{name: "side_wins_b", resolver: func(*testing.T) duplex.Resolver { return resolve.SideWins("b") }},
		{name: "dead_letter_all", resolver: func(*testing.T) duplex.Resolver { return resolve.DeadLetterAll() }},
		{name: "authority", resolver: func(t *testing.T) duplex.Resolver {
			return duplex.Chain(mustAuth(t, "name=a,n=a,note=b,f=b,tags=both"), resolve.DeadLetterAll())
		}},
		{name: "lww_column", stamp: true, resolver: func(*testing.T) duplex.Resolver {
			return &resolve.LWW{Column: "ts", Skew: skew, Now: farFuture}
		}},
		{name: "lww_commit", opts: []pairOption{withCommitTimes()}, resolver: func(*testing.T) duplex.Resolver {
			return &resolve.LWW{Skew: skew, Now: farFuture}
		}},
		{name: "authority_lww", stamp: true, resolver: func(t *testing.T) duplex.Resolver {
			return duplex.Chain(mustAuth(t, "name=a,note=b,ts=both"), &resolve.LWW{Column: "ts", Skew: skew, Now: farFuture}, resolve.DeadLetterAll())
		}},
		{name: "merges", resolver: func(*testing.T) duplex.Resolver {
			return duplex.Chain(resolve.CounterDelta("n", "f"), resolve.UnionTags("tags"), resolve.SideWins("b"))
		}},
	}
}

// editor draws random user edits on a pair and logs them.
type editor struct {
	rt    *rapid.T
	p     *pair
	keys  int
	stamp bool
	log   []string
}

var (
	genName  = rapid.SampledFrom([]string{"p", "q", "r"})
	genN     = rapid.Int64Range(0, 3)
	genF     = rapid.SampledFrom([]float64{0, 0.5, 1.5})
	genTags  = rapid.SliceOfDistinct(rapid.SampledFrom([]string{"x", "y", "z"}), rapid.ID[string])
	genSide  = rapid.SampledFrom([]string{"a", "b"})
	genField = rapid.SampledFrom([]string{"name", "note", "n", "f", "tags"})
)

// value draws a value for field.
func (e *editor) value(field string) any {
	switch field {
	case "name", "note":
		return genName.Draw(e.rt, field)
	case "n":
		return genN.Draw(e.rt, field)
	case "f":
		return genF.Draw(e.rt, field)
	case "tags":
		return genTags.Draw(e.rt, field)
	}
	panic(field)
}

// fields draws 1 or 2 fields and values among allowed.
func (e *editor) fields(allowed []string) duplex.Values {
	set := duplex.Values{}
	for range rapid.IntRange(1, 2).Draw(e.rt, "fields") {
		f := rapid.SampledFrom(allowed).Draw(e.rt, "field")
		set[f] = e.value(f)
	}
	if e.stamp {
		set["ts"] = e.p.clock.Now()
	}
	return set
}

func (e *editor) logf(format string, args ...any) {
	e.log = append(e.log, fmt.Sprintf("%s ", e.p.clock.Now().Sub(epoch))+fmt.Sprintf(format, args...))
}

// step makes one random move: a user edit on one side or a delivery.
// allowed restricts each side's updates to some fields (nil: all).
func (e *editor) step(allowed map[string][]string, deletes bool) {
	e.p.clock.Advance(time.Duration(rapid.IntRange(0, 3).Draw(e.rt, "tick")) * time.Second)
	switch op := rapid.IntRange(0, 9).Draw(e.rt, "op"); {
	case op <= 1:
		from := genSide.Draw(e.rt, "from")
		to := map[string]string{"a": "b", "b": "a"}[from]
		twice := rapid.Bool().Draw(e.rt, "twice")
		n := e.p.deliver(from, to, twice)
		e.logf("deliver %s->%s twice=%v (%d changes)", from, to, twice, n)
	default:
		side := genSide.Draw(e.rt, "side")
		k := int64(rapid.IntRange(1, e.keys).Draw(e.rt, "key"))
		db := e.p.db(side)
		fields := allowed[side]
		if fields == nil {
			fields = []string{"name", "note", "n", "f", "tags"}
		}
		switch {
		case db.Get(items, id(k)) == nil:
			r := row(k)
			for f, v := range e.fields(fields) {
				r[f] = v
			}
			if err := db.Insert(items, r); err != nil {
				e.rt.Fatal(err)
			}
			e.logf("%s: insert %v", side, r)
		case deletes && op == 2:
			if err := db.Delete(items, id(k)); err != nil {
				e.rt.Fatal(err)
			}
			e.logf("%s: delete id=%d", side, k)
		default:
			set := e.fields(fields)
			if err := db.Update(items, id(k), set); err != nil {
				e.rt.Fatal(err)
			}
			e.logf("%s: update id=%d %v", side, k, set)
		}
	}
}

func (e *editor) report() string {
	var b strings.Builder
	b.WriteString("edits and deliveries:\n")
	for _, l := range e.log {
		b.WriteString("  " + l + "\n")
	}
	b.WriteString("resolver calls:\n" + e.p.trace())
	b.WriteString("dead letters:\n")
	for _, d := range e.p.dlq.all() {
		fmt.Fprintf(&b, "  %s %s %s: %s\n", d.Direction, d.Change.Op, d.Change.Key, d.Error)
	}
	b.WriteString("rows:\n")
	for _, side := range []string{"a", "b"} {
		rows := e.p.db(side).Rows(items)
		keys := slices.Sorted(maps.Keys(rows))
		for _, k := range keys {
			fmt.Fprintf(&b, "  %s %s %v\n", side, k, rows[k])
		}
	}
	return b.String()
}

// seedKeys puts the same rows 1..n on both sides.
func seedKeys(p *pair, n int) {
	var rows []duplex.Values
	for k := range n {
		rows = append(rows, row(int64(k+1), "name", "p", "note", "p", "n", int64(0), "f", 0.0, "tags", []string{"x"}, "ts", epoch))
	}
	p.seed(rows...)
}

// TestPropertyReplicasConvergeOrDeadLetter: two replicas with the same seed
// rows, random interleavings of user edits on both sides (updates of random
// fields, deletes, inserts, re-inserts of deleted keys), random deliveries
// in either direction (sometimes every batch twice), then both directions
// run until nothing new arrives. For every key, a and b must hold the same
// row, or the DLQ must hold an entry for the key. It runs for every
// resolver of the package, alone or in the chains users build.
func TestPropertyReplicasConvergeOrDeadLetter(t *testing.T) {
	t.Parallel()
	for _, cfg := range propConfigs() {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			rapid.Check(t, func(rt *rapid.T) {
				p := newPair(rt, cfg.resolver(t), append(cfg.opts, withBatch(rapid.IntRange(1, 8).Draw(rt, "batch")))...)
				e := &editor{rt: rt, p: p, keys: rapid.IntRange(1, 4).Draw(rt, "keys"), stamp: cfg.stamp}
				seedKeys(p, rapid.IntRange(0, e.keys).Draw(rt, "seeded"))
				for range rapid.IntRange(1, 30).Draw(rt, "steps") {
					e.step(nil, true)
				}
				abFirst := rapid.Bool().Draw(rt, "a->b first")
				p.quiesce(abFirst)
				e.logf("quiesce, a->b first=%v", abFirst)
				if d := p.undeadDiff(); len(d) > 0 {
					rt.Fatalf("replicas differ without a dead letter:\n  %s\n%s", strings.Join(d, "\n  "), e.report())
				}
			})
		})
	}
}
