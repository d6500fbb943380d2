package duplexpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

// enableCommitTimes is the fix named when a side does not record commit
// timestamps.
const enableCommitTimes = "ALTER SYSTEM SET track_commit_timestamp = on, then restart PostgreSQL"

// trackCommitTimes reports whether a side's server records commit
// timestamps (track_commit_timestamp), which last-write-wins needs on the
// tables without the LWW column: then the applier reports each row's
// commit time (duplex.CommitTimeField).
func trackCommitTimes(ctx context.Context, pool *pgxpool.Pool, side string) (bool, error) {
	var track string
	if err := pool.QueryRow(ctx, "SHOW track_commit_timestamp").Scan(&track); err != nil {
		return false, fmt.Errorf("%s: read track_commit_timestamp: %w", side, err)
	}
	return track == "on", nil
}

// lwwPolicy builds last-write-wins table by table: on column for the
// tables that have it on both sides, and on commit timestamps for the
// others (a table lacking the column on either side: the column cannot
// order a version that does not carry it). A column that exists with
// another type than a timestamp is an error naming the side, table and
// column (option names the column setting in it). The choice is made once,
// here, from the catalogs of both sides, and depends only on the table:
// both directions decide a conflict the same way.
//
// Commit timestamps are known only where the server records them
// (track_commit_timestamp = on). When a side does not, the conflicts of
// the commit-timestamp tables go to the DLQ, with the reason and the fix,
// instead of being guessed, with a warning at start-up naming the tables.
// (With one side recording them, LWW would order some conflicts by the
// changes' commit times and dead-letter others, depending on which
// direction met them first.)
//
// Every table's choice is logged. It returns the resolver and its
// description ("lww(updated_at, skew 500ms)").
func lwwPolicy(column, option string, skew time.Duration, tables []duplex.Table, sides [2]*Endpoint, logger *slog.Logger) (duplex.Resolver, string, error) {
	byColumn, err := resolve.NewLWW(column, skew)
	if err != nil {
		return nil, "", err
	}
	lacking := map[duplex.Table][]string{} // table -> sides without the column
	var errs []error
	for _, s := range sides {
		types := make(map[duplex.Table]map[string]string, len(s.tables))
		for t, info := range s.tables {
			types[t] = info.types
		}
		without, err := byColumn.TablesWithoutColumn(types)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s (on %s): %w", option, column, s.cfg.Label, err))
		}
		for _, t := range without {
			lacking[t] = append(lacking[t], s.cfg.Label)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, "", err
	}

	var off []string // sides not recording commit timestamps
	for _, s := range sides {
		if !s.commitTimes {
			off = append(off, s.cfg.Label)
		}
	}
	var byCommit duplex.Resolver = &resolve.LWW{Skew: skew}
	if len(off) > 0 {
		byCommit = unknownCommitTimes{column: column, off: strings.Join(off, " and ")}
	}
	perTable := make(map[duplex.Table]duplex.Resolver, len(tables))
	var commitTables []duplex.Table
	for _, t := range tables {
		missing := lacking[t]
		if len(missing) == 0 {
			perTable[t] = byColumn
			logger.Info("conflict policy", "table", t.String(), "policy", "lww on column "+column)
			continue
		}
		perTable[t] = byCommit
		commitTables = append(commitTables, t)
		why := "no " + column + " column"
		if len(missing) < len(sides) {
			why += " on " + missing[0]
		}
		logger.Info("conflict policy", "table", t.String(), "policy", "lww on commit timestamps ("+why+")")
	}
	desc := fmt.Sprintf("lww(%s, skew %s)", column, skew)
	if len(commitTables) == 0 {
		return byColumn, desc, nil
	}
	desc = fmt.Sprintf("lww(%s, skew %s, commit timestamps on %s)", column, skew, tableList(commitTables))
	for _, s := range sides {
		if !s.commitTimes {
			logger.Warn("track_commit_timestamp is off: conflicts on tables without the lww column cannot be ordered and go to the dead-letter queue",
				"side", s.cfg.System, "tables", tableList(commitTables), "lww_column", column, "fix", enableCommitTimes)
		}
	}
	return resolve.ByTable{Tables: perTable}, desc, nil
}

// unknownCommitTimes is last-write-wins on commit timestamps where a side
// does not record them: every conflict it is shown goes to the DLQ, saying
// why and how to fix it. The rows stay as they are until someone resolves
// the entry.
type unknownCommitTimes struct {
	column string // the LWW column
	off    string // the sides without track_commit_timestamp, "a and b"
}

// Resolve implements duplex.Resolver.
func (u unknownCommitTimes) Resolve(_ context.Context, c *duplex.Conflict) error {
	for _, f := range c.Conflicting() {
		if p, _ := c.Decision(f); p == duplex.Undecided {
			c.DeadLetter(fmt.Sprintf("last-write-wins: %s has no %s column, so commit timestamps decide, but track_commit_timestamp is off on %s: "+
				"the commit times are unknown (%s; then resolve this entry)", c.Table(), u.column, u.off, enableCommitTimes), "lww")
			return nil
		}
	}
	return nil
}
