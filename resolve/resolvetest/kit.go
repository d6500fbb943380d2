package resolvetest

import (
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
)

// Config describes a resolver under test and the data the kit generates
// for it.
type Config struct {
	// NewResolver returns the resolver under test; it is called once per
	// pair of replicas, so a resolver with state starts afresh. Required.
	NewResolver func() duplex.Resolver
	// Table is the table the replicas hold. Zero value: Items().
	Table Table
	// Sides names the two systems, as the resolver knows them (field
	// authority and side-wins rules name systems). Zero value: "a", "b".
	Sides [2]string
	// Decides lists the fields the resolver may decide; a decision on any
	// other field is reported. nil: any field.
	Decides []string
	// Times is how the replicas report row commit times, for resolvers
	// that compare them. Zero value: NoTimes.
	Times Times
	// Stamp names a timestamp column every user edit sets to the edit's
	// time, like an updated_at column. "": none.
	Stamp string
	// Owned lists, per side, the columns its users write. nil: every
	// column with a Draw, on both sides.
	Owned map[string][]string
	// Limits restricts the random workload. Zero value: none.
	Limits Limits
	// Batch is the number of changes a source delivers at once. 0: 64
	// (Check draws it from 1 to 8).
	Batch int
}

func (c Config) withDefaults() Config {
	if c.Table.Table.Name == "" {
		c.Table = Items()
	}
	if c.Sides == [2]string{} {
		c.Sides = [2]string{"a", "b"}
	}
	if c.Batch == 0 {
		c.Batch = 64
	}
	return c
}

// fataler is what requireResolver needs of a testing.TB or *rapid.T.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

// requireResolver fails t when cfg has no NewResolver.
func requireResolver(t fataler, cfg Config) {
	t.Helper()
	if cfg.NewResolver == nil {
		t.Fatal("resolvetest: Config.NewResolver is required (return nil from it to test the Pipeline without a resolver)")
	}
}

// Run runs the conformance checks every resolver must pass, as subtests:
// Random (Check) and OddInput (CheckOddInput).
func Run(t *testing.T, cfg Config) {
	t.Helper()
	requireResolver(t, cfg)
	t.Run("Random", func(t *testing.T) {
		t.Parallel()
		Check(t, cfg)
	})
	t.Run("OddInput", func(t *testing.T) {
		t.Parallel()
		CheckOddInput(t, cfg)
	})
}

// Check plays random runs (see Play) twice each, on fresh replicas: with
// one side's changes going out first at the end, then the other's. It
// fails when
//   - the resolver modifies its input (the Conflict's change, current row,
//     times or kind), decides a field outside cfg.Decides, or panics;
//   - the replicas of a run differ on a key no dead letter names;
//   - the resolver decides the same input (the same conflict, with the
//     same decisions made before it) differently, in one run or another:
//     it is not deterministic;
//   - the delivery order changes the end rows of a key neither run
//     dead-lettered (the resolver decides a conflict differently depending
//     on the direction that meets it first).
func Check(t testing.TB, cfg Config) {
	t.Helper()
	requireResolver(t, cfg)
	cfg = cfg.withDefaults()
	rapid.Check(t, func(rt *rapid.T) {
		c := cfg
		c.Batch = rapid.IntRange(1, 8).Draw(rt, "batch")
		p, s := record(rt, c)
		p.logf("quiesce, %s first", s.first)
		if err := p.quiesce(s.first); err != nil {
			rt.Fatalf("%v\n%s", err, p.Report())
		}
		requireSound(rt, p)
		if d := p.UndeadDiff(); len(d) > 0 {
			rt.Fatalf("the replicas differ without a dead letter:\n  %s\n%s", strings.Join(d, "\n  "), p.Report())
		}
		swapped, err := replay(rt, c, s, p.Other(s.first), p)
		if err != nil {
			rt.Fatalf("the same edits failed on a second run (did the resolver decide differently?): %v\nfirst run:\n%s\nsecond run:\n%s", err, p.Report(), swapped.Report())
		}
		requireSound(rt, swapped)
		if d := swapped.UndeadDiff(); len(d) > 0 {
			rt.Fatalf("the replicas differ without a dead letter:\n  %s\n%s", strings.Join(d, "\n  "), swapped.Report())
		}
		if d := p.orderDiff(swapped); len(d) > 0 {
			rt.Fatalf("the delivery order changed the rows of keys nothing dead-lettered:\n  %s\n%s first:\n%s\n%s first:\n%s",
				strings.Join(d, "\n  "), s.first, p.Report(), p.Other(s.first), swapped.Report())
		}
	})
}

// CheckOddInput shows the resolver odd input and fails when it panics or
// modifies its input (returning an error is fine: the Pipeline retries,
// then dead-letters the change): conflicts of every kind with a change
// and a current row that are empty, NULL or missing, and random runs (see
// Play) whose users write values of any type to any column (Odd).
func CheckOddInput(t testing.TB, cfg Config) {
	t.Helper()
	requireResolver(t, cfg)
	cfg = cfg.withDefaults()
	cfg.Decides = nil // odd input can move a resolver to decide any field; only panics and mutations count here
	w := newWatch(cfg.NewResolver(), nil)
	for _, c := range oddConflicts(cfg) {
		_ = w.Resolve(t.Context(), c) // an error is a fine answer to odd input
	}
	for _, v := range w.violations() {
		t.Error(v)
	}
	odd := cfg
	for _, f := range cfg.Table.written() {
		odd.Table = odd.Table.With(f, Odd())
	}
	rapid.Check(t, func(rt *rapid.T) {
		c := odd
		c.Batch = rapid.IntRange(1, 8).Draw(rt, "batch")
		p, s := record(rt, c)
		if err := p.quiesce(s.first); err != nil {
			rt.Fatalf("%v\n%s", err, p.Report())
		}
		requireSound(rt, p)
	})
}

// requireSound fails when the resolver did what a resolver must not.
func requireSound(t *rapid.T, p *Pair) {
	if v := p.Violations(); len(v) > 0 {
		t.Fatalf("%s\n%s", strings.Join(v, "\n"), p.Report())
	}
}

// orderDiff lists the keys whose rows differ between p and q (two runs of
// the same edits) on either side, leaving out the keys either run
// dead-lettered.
func (p *Pair) orderDiff(q *Pair) []string {
	dead := p.DeadKeys()
	for k := range q.DeadKeys() {
		dead[k] = true
	}
	var out []string
	for _, side := range p.sides {
		x, y := p.Rows(side), q.Rows(side)
		for k := range x {
			if !dead[k] && !sameRow(x[k], y[k]) {
				out = append(out, side+" "+k+": "+fmt.Sprint(x[k])+" vs "+fmt.Sprint(y[k]))
			}
		}
		for k := range y {
			if _, ok := x[k]; !ok && !dead[k] {
				out = append(out, side+" "+k+": <none> vs "+fmt.Sprint(y[k]))
			}
		}
	}
	return out
}
