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
	return fmt.Sprintf("%016X/%08X/%016X", uint64(p.commit), p.ordinal, uint64(p.resume))
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
