package pgpoll

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/duplexsync/duplex"
)

// pos is a decoded Position: the sequence number of an emitted change and
// a running hash of the IDs of every change emitted up to it.
type pos struct {
	seq   uint64
	chain uint64
}

// Position renders p as "<seq, 20 digits>-<chain, 16 hex digits>", so that
// positions order as strings.
func (p pos) Position() duplex.Position {
	return duplex.Position(fmt.Sprintf("%020d-%016x", p.seq, p.chain))
}

// next returns the position of the change with id emitted after p.
func (p pos) next(id string) pos {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], p.chain)
	h := sha256.New()
	h.Write(b[:])
	h.Write([]byte(id))
	return pos{seq: p.seq + 1, chain: binary.BigEndian.Uint64(h.Sum(nil))}
}

func parsePos(p duplex.Position) (pos, error) {
	if p == "" {
		return pos{}, nil
	}
	a, b, ok := strings.Cut(string(p), "-")
	if ok {
		seq, err1 := strconv.ParseUint(a, 10, 64)
		chain, err2 := strconv.ParseUint(b, 16, 64)
		if err1 == nil && err2 == nil {
			return pos{seq: seq, chain: chain}, nil
		}
	}
	return pos{}, duplex.Permanent(fmt.Errorf("pgpoll: invalid position %q (want <seq>-<hash>)", p))
}

// ComparePositions returns -1, 0 or +1 as position a is before, equal to or
// after b. Positions of one source order by their sequence numbers.
func ComparePositions(a, b duplex.Position) int {
	return strings.Compare(string(a), string(b))
}

// mark is a table's watermark: the next pass starts after (ts, key), or at
// ts (inclusive) when key is nil. The zero mark starts at the beginning.
//
// ts is in the column's own terms: an instant for timestamptz, the
// wall-clock time of the writers' zone (as a time.Time in UTC) for
// timestamp without time zone.
type mark struct {
	set    bool
	ts     time.Time
	tsText string   // in the column's text form, cast back in SQL
	key    []string // primary-key columns cast to text
	// at is, for the safe point of a timestamp (without time zone)
	// column, the instant it stands for, in tsLayout; poll_watermark
	// stores it rather than tsText, which is derived from it in the
	// writers' zone (see Source.wallMark). "" otherwise.
	at string
}

// stored returns the text poll_watermark stores for m.
func (m mark) stored() string {
	if m.at != "" {
		return m.at
	}
	return m.tsText
}

// tsLayout renders a safe point like PostgreSQL renders a timestamptz in
// UTC with DateStyle ISO.
const tsLayout = "2006-01-02 15:04:05.999999-07"

// safeMark is the mark that starts at ts.
func safeMark(ts time.Time) mark {
	return mark{set: true, ts: ts, tsText: ts.UTC().Format(tsLayout)}
}

// capped returns the watermark after a pass that started at start, with
// safe point safe (a mark of the same column; unset: unknown), scanned
// every row up to c: c when it is before safe, else safe; never before
// start (which was safe when it was computed, and stays so).
func capped(start, safe, c mark) mark {
	x := c
	if !safe.set { // unknown: do not advance
		return start
	}
	if !c.set || !c.ts.Before(safe.ts) {
		x = safe
	}
	if !start.set {
		return x
	}
	switch {
	case x.ts.After(start.ts):
		return x
	case x.ts.Equal(start.ts) && start.key == nil && x.key != nil:
		return x
	}
	return start
}

// hasOffset reports whether s, a timestamp in PostgreSQL's ISO text form,
// has a UTC offset (a timestamptz, or an instant in tsLayout).
func hasOffset(s string) bool {
	i := strings.IndexByte(s, ' ')
	return i >= 0 && strings.ContainsAny(s[i:], "+-")
}

// parseTS parses a timestamp or timestamptz in PostgreSQL's ISO text form
// (with TimeZone UTC); infinities map to the extremes of time.Time. A
// timestamp without time zone parses to its wall-clock time, in UTC.
func parseTS(s string) (time.Time, error) {
	switch s {
	case "infinity":
		return time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), nil
	case "-infinity":
		return time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC), nil
	}
	for _, layout := range []string{tsLayout, "2006-01-02 15:04:05.999999-07:00", "2006-01-02 15:04:05.999999-07:00:00", "2006-01-02 15:04:05.999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("pgpoll: cannot parse timestamp %q", s)
}
