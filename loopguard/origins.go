package loopguard

import (
	"context"

	"github.com/duplexsync/duplex"
)

// Origins returns a [duplex.LoopGuard] that drops the changes whose
// Change.Origin is one of names: the replication origins under which the
// sync writes. Changes without an origin (users' own writes) always pass;
// an empty name is ignored. Echo never fails.
func Origins(names ...string) duplex.LoopGuard {
	set := make(originSet, len(names))
	for _, n := range names {
		if n != "" {
			set[n] = struct{}{}
		}
	}
	return set
}

type originSet map[string]struct{}

var _ duplex.LoopGuard = originSet(nil)

// Echo implements [duplex.LoopGuard].
func (s originSet) Echo(_ context.Context, c *duplex.Change) (bool, error) {
	if c.Origin == "" {
		return false, nil
	}
	_, ok := s[c.Origin]
	return ok, nil
}
