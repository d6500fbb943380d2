package resolvetest

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// Scenario is a sequence of user edits made while the sync is down.
type Scenario func(p *Pair)

// Outcome is the end of a scenario played both ways (see BothWays).
type Outcome struct {
	// A and B are the rows of cfg.Sides[0] and cfg.Sides[1] at the end
	// (the same in both runs).
	A, B map[string]duplex.Values
	// Dead are the dead letters of the run where Sides[0]'s changes went
	// out first.
	Dead []duplex.DeadLetter
	// DeadBA are the dead letters of the other run. They can differ from
	// Dead: a direction that meets a conflict before the change that
	// settles it (a delete whose time a last-writer-wins rule needs)
	// dead-letters it, and the later change then settles the row.
	DeadBA []duplex.DeadLetter
	// Calls are the conflicts (calls of a kind other than NoConflict) of
	// both runs: a two-way merge asks the resolver once per conflict, in
	// the direction that meets it first, so they show the conflict decided
	// from each direction.
	Calls []Call
}

// BothWays plays sc twice on fresh replicas, sending Sides[0]'s changes
// first once and Sides[1]'s first once. It fails unless each run ends with
// equal replicas (or a dead letter for every key where they differ), the
// resolver did nothing a resolver must not (see Check), and both runs end
// in the same rows: the resolver decided the same conflict the same way
// from either direction, whatever the arrival order. It returns the
// outcome and the Pair of the first run.
func BothWays(t testing.TB, cfg Config, sc Scenario) (Outcome, *Pair) {
	t.Helper()
	requireResolver(t, cfg)
	cfg = cfg.withDefaults()
	var pairs [2]*Pair
	for i, first := range cfg.Sides {
		p := NewPair(t, cfg, cfg.NewResolver())
		if i > 0 {
			p.watch.memo = pairs[0].watch.memo
		}
		sc(p)
		p.Quiesce(first)
		require.Empty(t, p.Violations(), "%s first", first)
		require.Empty(t, p.UndeadDiff(), "%s first: replicas differ without a dead letter; resolver calls:\n%s", first, p.Trace())
		pairs[i] = p
	}
	for _, side := range cfg.Sides {
		x, y := pairs[0].Rows(side), pairs[1].Rows(side)
		require.Equal(t, len(x), len(y), "the delivery order changed the rows of %s", side)
		for k, row := range x {
			require.True(t, sameRow(row, y[k]), "the delivery order changed key %s on %s: %v vs %v", k, side, row, y[k])
		}
	}
	return Outcome{
		A: pairs[0].Rows(cfg.Sides[0]), B: pairs[0].Rows(cfg.Sides[1]),
		Dead: pairs[0].DeadLetters(), DeadBA: pairs[1].DeadLetters(),
		Calls: append(slices.Clone(pairs[0].Conflicts()), pairs[1].Conflicts()...),
	}, pairs[0]
}
