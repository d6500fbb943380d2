package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/internal/pgstate"
)

// lateralLedger is a diagnostic, benchmark-only stand-in for the fix the
// profile pointed at, which has since landed in applypg (commit 0189f48);
// with it -lateral-ledger and the ledger workload are an A/A check of that
// fix. Before it, applypg.Applier.Applied asked
//
//	... WHERE sync = $1 AND target = $2 AND change_id = ANY($3::text[])
//
// which PostgreSQL ran (generic plan, or custom plan on a fresh ledger) as
// a scan of every ledger row of the sync and target with change_id = ANY
// evaluated as a filter: O(ledger rows x batch size) per batch, so the
// apply slows down as the ledger grows. lateralLedger asks the same
// question with one index probe per id (a LATERAL subquery with LIMIT 1 is
// never turned into a hash join), constant in the ledger's size.
//
// Everything else is the Applier's own (embedded). It skips the Applier's
// settle step (waiting out the backend of a broken connection), which the
// benchmark never needs: it is not a replacement for the library code.
type lateralLedger struct {
	*applypg.Applier
	pool         *pgxpool.Pool
	sync, target string
	sql          string
}

var _ duplex.Ledger = (*lateralLedger)(nil)

func newLateralLedger(a *applypg.Applier, pool *pgxpool.Pool, sync, target string) *lateralLedger {
	return &lateralLedger{Applier: a, pool: pool, sync: sync, target: target,
		sql: "SELECT i.id FROM unnest($3::text[]) AS i(id) CROSS JOIN LATERAL (SELECT FROM " + pgstate.Names(pgstate.DefaultSchema).Applied +
			" AS a WHERE a.sync = $1 AND a.target = $2 AND a.change_id = i.id LIMIT 1) AS x"}
}

// Applied reports, for each id, whether the ledger holds it.
func (l *lateralLedger) Applied(ctx context.Context, ids []string) ([]bool, error) {
	out := make([]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := l.pool.Query(ctx, l.sql, l.sync, l.target, ids)
	if err != nil {
		return nil, duplex.Transient(fmt.Errorf("bench: %s: read the ledger: %w", l.target, err))
	}
	found := make(map[string]bool, len(ids))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, duplex.Transient(fmt.Errorf("bench: %s: read the ledger: %w", l.target, err))
		}
		found[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, duplex.Transient(fmt.Errorf("bench: %s: read the ledger: %w", l.target, err))
	}
	for i, id := range ids {
		out[i] = found[id]
	}
	return out, nil
}
