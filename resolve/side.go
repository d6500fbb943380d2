package resolve

import (
	"context"
	"fmt"
	"strings"

	"github.com/duplexsync/duplex"
)

// Names of the resolvers in dead letters and metrics.
const (
	bySideWins      = "side_wins"
	byDeadLetterAll = "dead_letter_all"
)

// SideWinner gives every undecided conflicting field to one system's value:
// Take when the change comes from that system, Keep when it goes to it. For
// a row one side deleted and the other updated, the winner's version of the
// row stands (deleted or kept). It implements [duplex.Resolver]; build one
// with [SideWins].
//
// A System that is neither side of the sync wins nothing: the change is
// dead-lettered, the same way from both directions.
type SideWinner struct {
	// System is the winning system's name, as in [duplex.Direction].
	System string
}

var _ duplex.Resolver = SideWinner{}

// SideWins returns a resolver under which system's value wins every
// conflict that reaches it.
func SideWins(system string) SideWinner { return SideWinner{System: system} }

// Resolve implements [duplex.Resolver].
func (s SideWinner) Resolve(_ context.Context, c *duplex.Conflict) error {
	fields := undecidedConflicting(c)
	if len(fields) == 0 {
		return nil
	}
	switch s.System {
	case c.Direction.From:
		decideConflicting(c, true, bySideWins)
	case c.Direction.To:
		decideConflicting(c, false, bySideWins)
	default:
		c.DeadLetter(fmt.Sprintf("side wins: %q is neither %s nor %s", s.System, c.Direction.From, c.Direction.To), bySideWins)
	}
	return nil
}

// ManualReview sends every change with an undecided conflicting field to
// the DLQ for a person to decide; the target row stays as it is. Put it last
// in a chain to make that explicit (it is also what the Pipeline does with
// fields nobody decided, with a generic reason). It implements
// [duplex.Resolver]; build one with [DeadLetterAll].
type ManualReview struct{}

var _ duplex.Resolver = ManualReview{}

// DeadLetterAll returns a resolver that dead-letters every conflict that
// reaches it, naming the contested fields.
func DeadLetterAll() ManualReview { return ManualReview{} }

// Resolve implements [duplex.Resolver].
func (ManualReview) Resolve(_ context.Context, c *duplex.Conflict) error {
	if fields := undecidedConflicting(c); len(fields) > 0 {
		c.DeadLetter(fmt.Sprintf("manual review: %s conflict on %s %s, field(s) %s",
			c.Kind, c.Table(), c.Change.Key, strings.Join(fields, ", ")), byDeadLetterAll)
	}
	return nil
}
