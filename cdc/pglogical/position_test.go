package pglogical

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

func TestPositionFormat(t *testing.T) {
	t.Parallel()
	ps := []pos{{}, {commit: math.MaxUint64, ordinal: math.MaxUint32, resume: math.MaxUint64}, {commit: 0x16B374D848, ordinal: 7, resume: 0x16B3740000}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		ps = append(ps, pos{commit: pglogrepl.LSN(r.Uint64()), ordinal: int(r.Uint32()), resume: pglogrepl.LSN(r.Uint64())})
	}
	for _, p := range ps {
		s := p.String()
		require.Equal(t, fmt.Sprintf("%016X/%08X/%016X", uint64(p.commit), p.ordinal, uint64(p.resume)), s)
		q, err := parsePos(p.position())
		require.NoError(t, err)
		require.Equal(t, p, q)
	}
	// Positions sort as strings in delivery order.
	a := pos{commit: 0x100, ordinal: 0xF, resume: 0x90}
	b := pos{commit: 0x100, ordinal: 0x10, resume: 0x10}
	c := pos{commit: 0x1000, ordinal: 0, resume: 0}
	require.True(t, a.before(b) && b.before(c))
	require.Less(t, a.String(), b.String())
	require.Less(t, b.String(), c.String())
	for _, bad := range []string{"", "1/2", "x/0/0", "0/0/0/0", "0/100000000/0"} {
		_, err := parsePos(duplex.Position(bad))
		require.Error(t, err, bad)
	}
}
