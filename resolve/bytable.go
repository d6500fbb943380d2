package resolve

import (
	"context"

	"github.com/duplexsync/duplex"
)

// ByTable hands each conflict to the resolver of its table: one policy per
// table, such as last-write-wins on an updated_at column for the tables
// that have one and on commit timestamps for the others. It implements
// [duplex.Resolver].
//
// The choice depends on the conflict's table alone, which both directions
// of a sync see alike, so ByTable is deterministic when the resolvers it
// dispatches to are.
//
// A ByTable must not be modified while in use; it is safe for concurrent
// use when its resolvers are.
type ByTable struct {
	// Tables maps a table to the resolver of its conflicts; a table mapped
	// to nil has its conflicts left undecided.
	Tables map[duplex.Table]duplex.Resolver
	// Default resolves the conflicts of tables not in Tables. nil: they are
	// left undecided, to the next resolver of a chain (or the DLQ).
	Default duplex.Resolver
}

var _ duplex.Resolver = ByTable{}

// Resolve implements [duplex.Resolver]: it calls the resolver of c's table.
func (b ByTable) Resolve(ctx context.Context, c *duplex.Conflict) error {
	r, ok := b.Tables[c.Table()]
	if !ok {
		r = b.Default
	}
	if r == nil {
		return nil
	}
	return r.Resolve(ctx, c)
}
