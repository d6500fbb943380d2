package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
