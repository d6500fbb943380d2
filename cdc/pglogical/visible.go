package pglogical

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
)

var _ duplex.VisibilityWaiter = (*Source)(nil)

// noteXid remembers the transaction ID of a delivered transaction, for
// WaitVisible, until its commit is acknowledged.
func (s *Source) noteXid(commit pglogrepl.LSN, xid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.xids == nil {
		s.xids = make(map[pglogrepl.LSN]uint32)
	}
	s.xids[commit] = xid
}

// visibleSQL counts the transactions (32-bit IDs, widened to xid8 with the
// epoch of the current snapshot's xmax) that a new snapshot does not see
// yet, and returns the snapshot's xmin: every transaction before it has
// ended.
const visibleSQL = `SELECT (SELECT count(*) FROM unnest($1::bigint[]) AS x(x32)
	WHERE NOT pg_visible_in_snapshot(
		(((pg_snapshot_xmax(s)::text::bigint >> 32)
			- CASE WHEN x.x32 > (pg_snapshot_xmax(s)::text::bigint & 4294967295) THEN 1 ELSE 0 END) << 32
			| x.x32)::text::xid8, s)),
	pg_snapshot_xmin(s)::text::bigint & 4294967295
	FROM pg_current_snapshot() AS s`

// xidPrecedes reports whether 32-bit transaction ID a is older than b
// (modulo 2^32, as PostgreSQL compares them).
func xidPrecedes(a, b uint32) bool { return int32(a-b) < 0 }

// WaitVisible implements duplex.VisibilityWaiter: it returns once a new
// snapshot of the source database sees the transactions of positions. The
// walsender sends a transaction as soon as its commit record is flushed, a
// moment before the committing backend leaves the running set; a two-way
// merge that read the source row in that moment would read the row as it
// was before the change.
func (s *Source) WaitVisible(ctx context.Context, positions []duplex.Position) error {
	var xids []int64
	seen := map[pglogrepl.LSN]bool{}
	s.mu.Lock()
	for _, p := range positions {
		q, err := parsePos(p)
		if err != nil || seen[q.commit] {
			continue
		}
		seen[q.commit] = true
		// A delivered transaction older than the xmin of a snapshot taken
		// before is over, so committed and visible.
		if x, ok := s.xids[q.commit]; ok && (!s.horizonKnown || !xidPrecedes(x, s.horizon)) {
			xids = append(xids, int64(x))
		}
	}
	s.mu.Unlock()
	if len(xids) == 0 {
		return nil
	}
	pause := 100 * time.Microsecond
	for {
		var (
			n    int
			xmin int64
		)
		if err := s.pool.QueryRow(ctx, visibleSQL, xids).Scan(&n, &xmin); err != nil {
			return fmt.Errorf("pglogical: wait until %d transactions are visible on %s: %w", len(xids), s.cfg.System, pgutil.Classify(err))
		}
		s.mu.Lock()
		if !s.horizonKnown || xidPrecedes(s.horizon, uint32(xmin)) {
			s.horizon, s.horizonKnown = uint32(xmin), true
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return duplex.Unavailable(ctx.Err())
		}
		pause = min(2*pause, 20*time.Millisecond)
	}
}
