package pglogical

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/duplexsync/duplex"
)

// pos is a decoded Position: the change's transaction (commit LSN), its
// ordinal in the transaction, and the LSN to restart from once the change
// and everything before it are settled (the transaction's end when the
// change is its last, else the end of the previous transaction).
type pos struct {
	commit  pglogrepl.LSN
	ordinal int
	resume  pglogrepl.LSN
}

// String renders "CCCCCCCCCCCCCCCC/OOOOOOOO/RRRRRRRRRRRRRRRR" in fixed-width
// hex, so positions sort as strings in delivery order.
func (p pos) String() string {
	var b [16 + 1 + 8 + 1 + 16]byte
	hexTo(b[0:16], uint64(p.commit))
	b[16] = '/'
	hexTo(b[17:25], uint64(uint32(p.ordinal)))
	b[25] = '/'
	hexTo(b[26:42], uint64(p.resume))
	return string(b[:])
}

// hexTo writes v into b in upper-case hex, zero-padded to len(b) (like
// fmt's %0<len>X, without its cost: a position is made for every change).
func hexTo(b []byte, v uint64) {
	const digits = "0123456789ABCDEF"
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = digits[v&0xF]
		v >>= 4
	}
}

func (p pos) position() duplex.Position { return duplex.Position(p.String()) }

// before reports whether p comes before q in delivery order.
func (p pos) before(q pos) bool {
	if p.commit != q.commit {
		return p.commit < q.commit
	}
	return p.ordinal < q.ordinal
}

func parsePos(p duplex.Position) (pos, error) {
	parts := strings.Split(string(p), "/")
	if len(parts) != 3 {
		return pos{}, fmt.Errorf("pglogical: invalid position %q", p)
	}
	c, err1 := strconv.ParseUint(parts[0], 16, 64)
	o, err2 := strconv.ParseUint(parts[1], 16, 32)
	r, err3 := strconv.ParseUint(parts[2], 16, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return pos{}, fmt.Errorf("pglogical: invalid position %q", p)
	}
	return pos{commit: pglogrepl.LSN(c), ordinal: int(o), resume: pglogrepl.LSN(r)}, nil
}
