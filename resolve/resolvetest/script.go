package resolvetest

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// Limits restricts the random workload, for properties whose oracle needs
// it (every key's existence undisputed, say); the kit's own checks run
// unrestricted.
type Limits struct {
	// NoDeleteRace: a delete never races a change of the same key on the
	// other side: neither is made while the other is undelivered.
	NoDeleteRace bool
	// NoKeyReuse: a key deleted anywhere is never inserted again.
	NoKeyReuse bool
	// NoInsertInsert: a key is created on one side only.
	NoInsertInsert bool
}

type opKind uint8

const (
	opDeliver opKind = iota
	opInsert
	opUpdate
	opDelete
)

// op is one move of a random run: a user edit on one side or a delivery,
// after the clock moved by tick.
type op struct {
	kind  opKind
	tick  time.Duration
	side  string // the user's side, or the delivering side
	key   int64
	row   duplex.Values // the inserted row or the updated columns
	twice bool          // a delivery of every batch twice
}

// script is a random run: the seeded keys, the moves, and the side whose
// changes go out first when the run quiesces.
type script struct {
	seeded int
	ops    []op
	first  string
}

// Play seeds a Pair built from cfg with random rows, plays random user
// edits (updates of random columns, deletes, inserts) on both sides and
// random deliveries in either direction at random points (sometimes every
// batch twice), within cfg.Limits, then runs both directions until nothing
// new arrives. The Pair's Report lists the moves.
func Play(t *rapid.T, cfg Config) *Pair {
	t.Helper()
	requireResolver(t, cfg)
	p, s := record(t, cfg)
	if err := p.quiesce(s.first); err != nil {
		t.Fatalf("%v\n%s", err, p.Report())
	}
	return p
}

// record draws a random run on a new Pair and plays it up to the final
// quiescing.
func record(t *rapid.T, cfg Config) (*Pair, *script) {
	cfg = cfg.withDefaults()
	p := NewPair(t, cfg, cfg.NewResolver())
	e := &editor{t: t, p: p, cfg: cfg, keys: rapid.IntRange(1, 4).Draw(t, "keys"), deleted: map[int64]bool{}, created: map[int64]string{}}
	s := &script{seeded: rapid.IntRange(0, e.keys).Draw(t, "seeded")}
	seed(p, s.seeded)
	for k := range s.seeded {
		e.created[int64(k+1)] = "seed"
	}
	for range rapid.IntRange(1, 30).Draw(t, "steps") {
		if o, ok := e.step(); ok {
			s.ops = append(s.ops, o)
			if err := p.play(o); err != nil {
				t.Fatalf("%v\n%s", err, p.Report())
			}
		}
	}
	s.first = rapid.SampledFrom(cfg.Sides[:]).Draw(t, "first out")
	return p, s
}

// replay plays s on a new Pair built from cfg, with first's changes going
// out first at the end. The new Pair's resolver calls are checked against
// the decisions of like's.
func replay(t *rapid.T, cfg Config, s *script, first string, like *Pair) (*Pair, error) {
	p := NewPair(t, cfg, cfg.NewResolver())
	p.watch.memo = like.watch.memo
	seed(p, s.seeded)
	for i, o := range s.ops {
		if err := p.play(o); err != nil {
			return p, fmt.Errorf("move %d: %w", i+1, err)
		}
	}
	p.logf("quiesce, %s first", first)
	return p, p.quiesce(first)
}

func seed(p *Pair, n int) {
	rows := make([]duplex.Values, 0, n)
	for k := range n {
		rows = append(rows, p.table.SeedRow(int64(k+1)))
	}
	p.Seed(rows...)
}

// play makes one move on p.
func (p *Pair) play(o op) error {
	p.clock.Advance(o.tick)
	switch o.kind {
	case opDeliver:
		n, err := p.deliver(o.side, p.Other(o.side), o.twice)
		p.logf("deliver %s->%s twice=%v (%d changes)", o.side, p.Other(o.side), o.twice, n)
		return err
	case opInsert:
		p.logf("%s: insert %v", o.side, o.row)
		return p.insert(o.side, o.row.Clone())
	case opUpdate:
		p.logf("%s: update %s=%d %v", o.side, p.table.Key, o.key, o.row)
		return p.update(o.side, o.key, o.row.Clone())
	case opDelete:
		p.logf("%s: delete %s=%d", o.side, p.table.Key, o.key)
		return p.delete(o.side, o.key)
	}
	return fmt.Errorf("resolvetest: unknown move %d", o.kind)
}

// editor draws the moves of a random run, within the limits.
type editor struct {
	t       *rapid.T
	p       *Pair
	cfg     Config
	keys    int
	deleted map[int64]bool   // keys deleted on either side
	created map[int64]string // the side that created each key, or "seed"
}

// step draws one move; false when the limits forbid the drawn one.
func (e *editor) step() (op, bool) {
	t, p, lim := e.t, e.p, e.cfg.Limits
	o := op{tick: time.Duration(rapid.IntRange(0, 3).Draw(t, "tick")) * time.Second}
	kind := rapid.IntRange(0, 9).Draw(t, "op")
	if kind <= 1 {
		o.kind, o.side, o.twice = opDeliver, rapid.SampledFrom(e.cfg.Sides[:]).Draw(t, "from"), rapid.Bool().Draw(t, "twice")
		return o, true
	}
	o.side = rapid.SampledFrom(e.cfg.Sides[:]).Draw(t, "side")
	o.key = int64(rapid.IntRange(1, e.keys).Draw(t, "key"))
	other := p.Other(o.side)
	switch {
	case p.Get(o.side, o.key) == nil:
		if lim.NoKeyReuse && e.deleted[o.key] ||
			lim.NoInsertInsert && e.created[o.key] != "" && e.created[o.key] != o.side ||
			lim.NoDeleteRace && e.pendingDelete(other, o.key) {
			return o, false
		}
		o.kind, o.row = opInsert, p.table.Row(o.key)
		maps.Copy(o.row, e.fields(o.side, o.key, o.tick))
		e.created[o.key] = o.side
	case kind == 2:
		if lim.NoDeleteRace && len(e.pending(other, o.key)) > 0 {
			return o, false
		}
		o.kind = opDelete
		e.deleted[o.key] = true
	default:
		if lim.NoDeleteRace && e.pendingDelete(other, o.key) {
			return o, false
		}
		o.kind, o.row = opUpdate, e.fields(o.side, o.key, o.tick)
	}
	return o, true
}

// fields draws the columns of an update or insert on side: the whole row
// or one or two columns, among those side's users write; and the stamp,
// set to the edit's time.
func (e *editor) fields(side string, k int64, tick time.Duration) duplex.Values {
	allowed := e.cfg.Owned[side]
	if allowed == nil {
		allowed = e.p.table.written()
	}
	current := e.p.Get(side, k)
	set := duplex.Values{}
	draw := func(f string) {
		c, ok := e.p.table.column(f)
		if !ok || c.Draw == nil {
			e.t.Fatalf("resolvetest: %s writes column %q, which the table has not or never draws", side, f)
		}
		set[f] = c.Draw(e.t, current[f])
	}
	if rapid.IntRange(0, 3).Draw(e.t, "whole row") == 0 {
		for _, f := range allowed {
			draw(f)
		}
	} else {
		for range rapid.IntRange(1, 2).Draw(e.t, "fields") {
			draw(rapid.SampledFrom(allowed).Draw(e.t, "field"))
		}
	}
	if e.cfg.Stamp != "" {
		set[e.cfg.Stamp] = e.p.Now().Add(tick)
	}
	return set
}

// pending returns side's user changes to key k not yet delivered to the
// other side.
func (e *editor) pending(side string, k int64) []duplex.Change {
	db := e.p.DB(side)
	acked := 0
	if pos := db.Source(memdb.SourceConfig{Slot: "sync"}).Acked(); pos != "" {
		n, err := strconv.Atoi(string(pos))
		if err != nil {
			e.t.Fatalf("resolvetest: memdb position %q: %v", pos, err)
		}
		acked = n
	}
	key := e.p.table.KeyOf(k).String()
	var out []duplex.Change
	for _, c := range db.Changes()[acked:] {
		if c.Origin == "" && c.Key.String() == key {
			out = append(out, c)
		}
	}
	return out
}

func (e *editor) pendingDelete(side string, k int64) bool {
	return slices.ContainsFunc(e.pending(side, k), func(c duplex.Change) bool { return c.Op == duplex.OpDelete })
}
