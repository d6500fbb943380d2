package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
	"github.com/duplexsync/duplex/resolve/resolvetest"
)

// TestCustomResolverMerges runs the example: stock merged by deltas
// (100 - 3 + 20), the longer note kept on both sides, nothing dead-lettered.
func TestCustomResolverMerges(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	require.NoError(t, run(&out))
	require.Equal(t, `warehouse: stock=117 note="blue, popular"
shop:      stock=117 note="blue, popular"
dead letters: 0
`, out.String())
}

// productsTable is the example's table for the resolver kit: users count
// stock and write notes of different lengths.
func productsTable() resolvetest.Table {
	return resolvetest.Table{
		Table: products,
		Key:   "sku",
		Columns: []resolvetest.Column{
			{Name: "stock", Seed: int64(100), Draw: resolvetest.Int64Counter()},
			{Name: "note", Seed: "blue", Draw: resolvetest.OneOf("blue", "navy", "blue, popular", "")},
		},
	}
}

// TestCustomResolverConformance runs the resolver kit on longerNote alone
// (it decides the note and nothing else) and on the example's chain.
func TestCustomResolverConformance(t *testing.T) {
	t.Parallel()
	sides := [2]string{"warehouse", "shop"}
	t.Run("longer_note", func(t *testing.T) {
		t.Parallel()
		resolvetest.Run(t, resolvetest.Config{
			NewResolver: func() duplex.Resolver { return longerNote },
			Table:       productsTable(), Sides: sides, Decides: []string{"note"},
		})
	})
	t.Run("chain", func(t *testing.T) {
		t.Parallel()
		resolvetest.Run(t, resolvetest.Config{
			NewResolver: func() duplex.Resolver {
				return duplex.Chain(resolve.CounterDelta("stock"), longerNote, resolve.DeadLetterAll())
			},
			Table: productsTable(), Sides: sides,
		})
	})
}
