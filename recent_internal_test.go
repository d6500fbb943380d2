package duplex

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// A generations map of capacity 4 remembers the last two to four keys put:
// the older generation is dropped when the newer one fills, a key put again
// is not counted twice, and a key put again survives its old generation.
func TestGenerations(t *testing.T) {
	t.Parallel()
	g := newGenerations[int](4)
	require.True(t, g.empty())
	for i := range 4 {
		g.put("k"+strconv.Itoa(i), i)
	}
	// {k0, k1} became the older generation when k2 started the newer one.
	for i := range 4 {
		v, ok := g.get("k" + strconv.Itoa(i))
		require.True(t, ok, "k%d", i)
		require.Equal(t, i, v)
	}
	g.put("k3", 33) // already in the newer generation {k2, k3}: no rotation
	_, ok := g.get("k0")
	require.True(t, ok, "putting k3 again dropped the older generation")
	g.put("k0", 10) // new to the full newer generation: {k0, k1} is dropped, {k2, k3} is the older
	g.put("k4", 4)  // the newer generation is {k0, k4}
	_, ok = g.get("k1")
	require.False(t, ok, "k1 was only in the dropped generation")
	for k, want := range map[string]int{"k3": 33, "k0": 10, "k4": 4} {
		v, ok := g.get(k)
		require.True(t, ok, k)
		require.Equal(t, want, v, k)
	}
}
