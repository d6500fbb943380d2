package resolve_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

// TestTwoWayNonOwnerEditMergedByOwnersChange: b edits name, which a owns,
// and a edits another field of the row. Authority must leave a's name on
// both sides whichever direction merges the row first. When b->a merges
// first (b's change is the source), Authority keeps a's name and writes it
// back over b's. When a->b merges first (a's change is the source, b's
// row the target), name is a field only the target changed: the merge
// keeps it without asking the resolver and writes it back to a, so b's
// non-owner edit wins; the later b->a merge finds both rows equal to the
// record and does nothing. Both replicas agree, so the property tests
// (which check agreement) do not see it; internal/chaos found it
// (TestChaosKillAndRestart's non-owner edits of both-sided keys).
//
// It failed (abFirst=true) before the merge offered target-only fields to
// the resolvers (Conflict.TargetOnly).
func TestTwoWayNonOwnerEditMergedByOwnersChange(t *testing.T) {
	t.Parallel()
	auth, err := resolve.ParseAuthority("name=a")
	require.NoError(t, err)
	for _, abFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("abFirst=%v", abFirst), func(t *testing.T) {
			t.Parallel()
			p := newPair(t, auth)
			p.Seed(row(1, "name", "x", "note", "x"))
			p.Update("b", 1, duplex.Values{"name": "b"}) // b does not own name
			p.Update("a", 1, duplex.Values{"note": "a"}) // a edits another field
			first := "b"
			if abFirst {
				first = "a"
			}
			p.Quiesce(first)
			for _, side := range []string{"a", "b"} {
				got := p.Get(side, 1)
				require.Equal(t, "x", got["name"], "%s: a owns name; resolver calls:\n%s", side, p.Trace())
				require.Equal(t, "a", got["note"], "%s: a's edit of note", side)
			}
		})
	}
}
