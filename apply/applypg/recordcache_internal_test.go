package applypg

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// TestRecordCache: committed records answer reads, removed ones answer
// "none", dropped keys and keys pushed out by two newer generations are
// misses, and what get returns is the caller's to change.
func TestRecordCache(t *testing.T) {
	t.Parallel()
	tbl := duplex.Table{Schema: "public", Name: "t"}
	other := duplex.Table{Schema: "public", Name: "u"}
	key := func(i int64) duplex.Key { return duplex.Key{{Name: "id", Value: i}} }
	rec := func(v uint64) duplex.Agreement {
		return duplex.Agreement{Known: true, Version: v, Row: duplex.Values{"id": int64(v), "n": "x"}, Unknown: []string{"n"}}
	}
	c := newRecordCache(4) // two generations of 2
	c.put([]duplex.AgreementWrite{{Table: tbl, Key: key(1), Agreement: rec(1)}, {Table: tbl, Key: key(2)}})

	recs := make([]duplex.Agreement, 3)
	miss := c.get(tbl, []duplex.Key{key(1), key(2), key(3)}, recs)
	require.Equal(t, []int{2}, miss)
	require.Equal(t, rec(1), recs[0])
	require.Equal(t, duplex.Agreement{}, recs[1], "a removed record is known absent")
	require.Equal(t, []int{0}, c.get(other, []duplex.Key{key(1)}, make([]duplex.Agreement, 1)), "tables do not collide")

	recs[0].Row["n"] = "changed"
	recs[0].Unknown[0] = "changed"
	again := make([]duplex.Agreement, 1)
	require.Empty(t, c.get(tbl, []duplex.Key{key(1)}, again))
	require.Equal(t, rec(1), again[0], "the cache keeps its own copy")

	c.drop([]duplex.AgreementWrite{{Table: tbl, Key: key(1)}})
	require.Equal(t, []int{0}, c.get(tbl, []duplex.Key{key(1)}, make([]duplex.Agreement, 1)), "dropped")

	// Keys 3-6 fill two generations: key 2 (older) goes, 5 and 6 stay.
	for i := int64(3); i <= 6; i++ {
		c.put([]duplex.AgreementWrite{{Table: tbl, Key: key(i), Agreement: rec(uint64(i))}})
	}
	require.Equal(t, []int{0}, c.get(tbl, []duplex.Key{key(2), key(5), key(6)}, make([]duplex.Agreement, 3)))
}
