package resolve_test

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
	"github.com/duplexsync/duplex/resolve"
)

// limits restricts the random workload. Only the Authority-alone property
// uses them, because its oracle ("every owned field holds its owner's last
// value") follows one row from creation to the end and needs the row's
// existence to be undisputed; the convergence property runs unrestricted.
type limits struct {
	// noDeleteRace: a delete never races a change of the same key on the
	// other side: neither is made while the other is undelivered.
	noDeleteRace bool
	// noKeyReuse: a key deleted anywhere is never inserted again.
	noKeyReuse bool
	// noInsertInsert: a key is created on one side only.
	noInsertInsert bool
}

// propConfig is a resolver set-up the properties run under.
type propConfig struct {
	name     string
	resolver func(t *testing.T) duplex.Resolver
	opts     []pairOption
	stamp    bool                // user edits set ts to their time, as an updated_at column
	counters bool                // user edits add 1..3 to the counters n and f, as counting does
	owned    map[string][]string // fields each side edits; nil: any
	limits   limits
}

func farFuture() time.Time { return epoch.Add(1000 * time.Hour) }

func mustAuthority(t *testing.T, spec string) *resolve.Authority {
	t.Helper()
	a, err := resolve.ParseAuthority(spec)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func propConfigs() []propConfig {
	// Under Authority users write the fields their system owns (and shared
	// ones): that is what ownership means. A non-owner's write is not
	// propagated, by design.
	owned := map[string][]string{"a": {"name", "n", "tags"}, "b": {"note", "f", "tags"}}
	return []propConfig{
		{name: "default", resolver: func(*testing.T) duplex.Resolver { return nil }},
		{name: "dead_letter_all", resolver: func(*testing.T) duplex.Resolver { return resolve.DeadLetterAll() }},
		{name: "side_wins_a", resolver: func(*testing.T) duplex.Resolver { return resolve.SideWins("a") }},
		{name: "side_wins_b", resolver: func(*testing.T) duplex.Resolver { return resolve.SideWins("b") }},
		{
			name: "authority", owned: owned,
			resolver: func(t *testing.T) duplex.Resolver {
				return duplex.Chain(mustAuthority(t, "name=a,n=a,note=b,f=b,tags=both"), resolve.DeadLetterAll())
			},
		},
		{
			name: "lww_column", stamp: true,
			resolver: func(*testing.T) duplex.Resolver { return &resolve.LWW{Column: "ts", Skew: skew, Now: farFuture} },
		},
		{
			name: "lww_commit", opts: []pairOption{withCommitTimes()},
			resolver: func(*testing.T) duplex.Resolver { return &resolve.LWW{Skew: skew, Now: farFuture} },
		},
		{
			name: "lww_xmin", opts: []pairOption{withXminTimes()},
			resolver: func(*testing.T) duplex.Resolver { return &resolve.LWW{Skew: skew, Now: farFuture} },
		},
		{
			name: "authority_lww", stamp: true,
			owned: map[string][]string{"a": {"name", "n", "f", "tags"}, "b": {"note", "n", "f", "tags"}},
			resolver: func(t *testing.T) duplex.Resolver {
				return duplex.Chain(mustAuthority(t, "name=a,note=b,n=both,f=both,tags=both,ts=both"),
					&resolve.LWW{Column: "ts", Skew: skew, Now: farFuture}, resolve.DeadLetterAll())
			},
		},
		{
			name: "merges", counters: true,
			resolver: func(*testing.T) duplex.Resolver {
				return duplex.Chain(resolve.CounterDelta("n", "f"), resolve.UnionTags("tags"), resolve.SideWins("b"))
			},
		},
	}
}

// editor draws random user edits and deliveries on a pair, within limits,
// and logs them for the failure report.
type editor struct {
	rt       *rapid.T
	p        *pair
	keys     int
	stamp    bool
	counters bool
	owned    map[string][]string
	limits   limits
	deleted  map[int64]bool // keys deleted on either side
	created  map[int64]string
	log      []string
}

var (
	genName = rapid.SampledFrom([]string{"p", "q", "r"})
	genN    = rapid.Int64Range(0, 3)
	genF    = rapid.SampledFrom([]float64{0, 0.5, 1.5})
	genTags = rapid.SliceOfDistinct(rapid.SampledFrom([]string{"x", "y", "z"}), rapid.ID[string])
	genSide = rapid.SampledFrom([]string{"a", "b"})
	other   = map[string]string{"a": "b", "b": "a"}
)

func newEditor(rt *rapid.T, p *pair, cfg propConfig) *editor {
	return &editor{
		rt: rt, p: p, keys: rapid.IntRange(1, 4).Draw(rt, "keys"), stamp: cfg.stamp, counters: cfg.counters, owned: cfg.owned,
		limits: cfg.limits, deleted: map[int64]bool{}, created: map[int64]string{},
	}
}

// value draws a value for field on side.
func (e *editor) value(side, field string, k int64) any {
	if e.counters && (field == "n" || field == "f") {
		// Small steps: both sides often reach the same value by different
		// increments, which the Pipeline offers as converged fields.
		step := rapid.IntRange(1, 3).Draw(e.rt, "step")
		if field == "n" {
			cur, _ := e.p.get(side, k)["n"].(int64)
			return cur + int64(step)
		}
		cur, _ := e.p.get(side, k)["f"].(float64)
		return cur + float64(step)
	}
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

// fields draws the fields of an update or insert on side.
func (e *editor) fields(side string, k int64) duplex.Values {
	allowed := e.owned[side]
	if allowed == nil {
		allowed = []string{"name", "note", "n", "f", "tags"}
	}
	set := duplex.Values{}
	if rapid.IntRange(0, 3).Draw(e.rt, "whole row") == 0 {
		for _, f := range allowed {
			set[f] = e.value(side, f, k)
		}
	} else {
		for range rapid.IntRange(1, 2).Draw(e.rt, "fields") {
			f := rapid.SampledFrom(allowed).Draw(e.rt, "field")
			set[f] = e.value(side, f, k)
		}
	}
	if e.stamp {
		set["ts"] = e.p.clock.Now()
	}
	return set
}

func (e *editor) logf(format string, args ...any) {
	e.log = append(e.log, fmt.Sprintf("%-4s ", e.p.clock.Now().Sub(epoch))+fmt.Sprintf(format, args...))
}

// pending returns side's user changes to key k not yet delivered to the other side.
func (e *editor) pending(side string, k int64) []duplex.Change {
	db := e.p.db(side)
	acked := 0
	if pos := db.Source(memdb.SourceConfig{Slot: "sync"}).Acked(); pos != "" {
		n, err := strconv.Atoi(string(pos))
		if err != nil {
			e.rt.Fatal(err)
		}
		acked = n
	}
	var out []duplex.Change
	for _, c := range db.Changes()[acked:] {
		if c.Origin == "" && c.Key.String() == id(k).String() {
			out = append(out, c)
		}
	}
	return out
}

func (e *editor) pendingDelete(side string, k int64) bool {
	return slices.ContainsFunc(e.pending(side, k), func(c duplex.Change) bool { return c.Op == duplex.OpDelete })
}

// step makes one random move: a user edit on one side or a delivery. A
// move the limits forbid is skipped.
func (e *editor) step() {
	e.p.clock.Advance(time.Duration(rapid.IntRange(0, 3).Draw(e.rt, "tick")) * time.Second)
	op := rapid.IntRange(0, 9).Draw(e.rt, "op")
	if op <= 1 {
		from := genSide.Draw(e.rt, "from")
		twice := rapid.Bool().Draw(e.rt, "twice")
		n := e.p.deliver(from, other[from], twice)
		e.logf("deliver %s->%s twice=%v (%d changes)", from, other[from], twice, n)
		return
	}
	side := genSide.Draw(e.rt, "side")
	k := int64(rapid.IntRange(1, e.keys).Draw(e.rt, "key"))
	db, lim := e.p.db(side), e.limits
	switch {
	case db.Get(items, id(k)) == nil:
		if lim.noKeyReuse && e.deleted[k] ||
			lim.noInsertInsert && e.created[k] != "" && e.created[k] != side ||
			lim.noDeleteRace && e.pendingDelete(other[side], k) {
			return
		}
		r := row(k)
		maps.Copy(r, e.fields(side, k))
		if err := db.Insert(items, r); err != nil {
			e.rt.Fatal(err)
		}
		e.created[k] = side
		e.logf("%s: insert %v", side, r)
	case op == 2:
		if lim.noDeleteRace && len(e.pending(other[side], k)) > 0 {
			return
		}
		if err := db.Delete(items, id(k)); err != nil {
			e.rt.Fatal(err)
		}
		e.deleted[k] = true
		e.logf("%s: delete id=%d", side, k)
	default:
		if lim.noDeleteRace && e.pendingDelete(other[side], k) {
			return
		}
		set := e.fields(side, k)
		if err := db.Update(items, id(k), set); err != nil {
			e.rt.Fatal(err)
		}
		e.logf("%s: update id=%d %v", side, k, set)
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
		for _, k := range slices.Sorted(maps.Keys(rows)) {
			fmt.Fprintf(&b, "  %s %s %v\n", side, k, rows[k])
		}
	}
	return b.String()
}

// seedKeys puts the same rows 1..n on both sides.
func (e *editor) seedKeys(n int) {
	var rows []duplex.Values
	for k := range n {
		rows = append(rows, row(int64(k+1), "name", "p", "note", "p", "n", int64(0), "f", 0.0, "tags", []string{"x"}, "ts", epoch))
		e.created[int64(k+1)] = "seed"
	}
	e.p.seed(rows...)
}

// run seeds, plays random steps, then quiesces in a random order.
func (e *editor) run() {
	e.seedKeys(rapid.IntRange(0, e.keys).Draw(e.rt, "seeded"))
	for range rapid.IntRange(1, 30).Draw(e.rt, "steps") {
		e.step()
	}
	abFirst := rapid.Bool().Draw(e.rt, "a->b first")
	e.p.quiesce(abFirst)
	e.logf("quiesce, a->b first=%v", abFirst)
}

// TestPropertyReplicasConvergeOrDeadLetter: two replicas with the same seed
// rows, random interleavings of user edits on both sides (updates of random
// fields, deletes, inserts), random deliveries in either direction at
// random points (sometimes every batch twice), then both directions run
// until nothing new arrives. For every key, a and b must hold the same row,
// or the DLQ must hold an entry for the key. It runs for every resolver of
// the package, alone or in the chains users build; see limits for the
// workload restrictions each needs because of root-package issues.
func TestPropertyReplicasConvergeOrDeadLetter(t *testing.T) {
	t.Parallel()
	for _, cfg := range propConfigs() {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			rapid.Check(t, func(rt *rapid.T) {
				p := newPair(rt, cfg.resolver(t), append(slices.Clone(cfg.opts), withBatch(rapid.IntRange(1, 8).Draw(rt, "batch")))...)
				e := newEditor(rt, p, cfg)
				e.run()
				if d := p.undeadDiff(); len(d) > 0 {
					rt.Fatalf("replicas differ without a dead letter:\n  %s\n%s", strings.Join(d, "\n  "), e.report())
				}
			})
		})
	}
}

// TestPropertyAuthorityAlwaysConverges: every field is owned by exactly one
// side and users write only the fields their side owns (inserts, updates,
// and deletes that do not race an update of the other side). Under
// Authority alone, the replicas end equal with no dead letter at all, and
// every owned field holds the last value its owner wrote.
func TestPropertyAuthorityAlwaysConverges(t *testing.T) {
	t.Parallel()
	cfg := propConfig{
		name:   "authority_only",
		owned:  map[string][]string{"a": {"name", "n"}, "b": {"note", "f", "tags"}},
		limits: limits{noKeyReuse: true, noDeleteRace: true},
	}
	auth := mustAuthority(t, "name=a,n=a,note=b,f=b,tags=b,ts=a")
	rapid.Check(t, func(rt *rapid.T) {
		p := newPair(rt, auth, withBatch(rapid.IntRange(1, 8).Draw(rt, "batch")))
		e := newEditor(rt, p, cfg)
		e.run()
		if d := p.diff(); len(d) > 0 {
			rt.Fatalf("replicas differ:\n  %s\n%s", strings.Join(d, "\n  "), e.report())
		}
		if dl := p.dlq.all(); len(dl) > 0 {
			rt.Fatalf("%d dead letters under Authority alone:\n%s", len(dl), e.report())
		}
		// The owner's last write of each field of each surviving row.
		last := map[string]duplex.Values{}
		for _, side := range []string{"a", "b"} {
			for _, c := range p.db(side).Changes() {
				if c.Origin != "" || c.After == nil {
					continue
				}
				k := c.Key.String()
				if last[k] == nil {
					last[k] = duplex.Values{}
				}
				for _, f := range cfg.owned[side] {
					if v, ok := c.After[f]; ok && (c.Before == nil || !duplex.Equal(c.Before[f], v)) {
						last[k][f] = v
					}
				}
			}
		}
		for k, r := range p.a.Rows(items) {
			for _, side := range []string{"a", "b"} {
				for _, f := range cfg.owned[side] {
					want, wrote := last[k][f]
					if got := r[f]; wrote && !duplex.Equal(got, want) || !wrote && got != nil && !isSeed(k, f, got) {
						rt.Fatalf("%s field %s (owned by %s) holds %v, its owner last wrote %v (wrote=%v)\n%s", k, f, side, got, want, wrote, e.report())
					}
				}
			}
		}
	})
}

// isSeed reports whether v is field's seed value (seed rows are written on
// both sides before the sync starts, not by the owner alone).
func isSeed(_ string, field string, v any) bool {
	seed := row(0, "name", "p", "note", "p", "n", int64(0), "f", 0.0, "tags", []string{"x"})
	return duplex.Equal(seed[field], v)
}
