package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

// enableCommitTimes is the fix pgbisync names when a side does not record
// commit timestamps.
const enableCommitTimes = "ALTER SYSTEM SET track_commit_timestamp = on, then restart PostgreSQL"

// trackCommitTimes reports whether a side's server records commit
// timestamps (track_commit_timestamp), which last-write-wins needs on the
// tables without -lww-column: then the applier reports each row's commit
// time (duplex.CommitTimeField).
func trackCommitTimes(ctx context.Context, pool *pgxpool.Pool, side string) (bool, error) {
	var track string
	if err := pool.QueryRow(ctx, "SHOW track_commit_timestamp").Scan(&track); err != nil {
		return false, fmt.Errorf("-%s: read track_commit_timestamp: %w", side, err)
	}
	return track == "on", nil
}

// lwwPolicy builds -conflict lww, table by table: last-write-wins on
// -lww-column for the tables that have it on both sides, and on commit
// timestamps for the others (a table lacking the column on either side:
// the column cannot order a version that does not carry it). A column
// that exists with another type than a timestamp is an error naming the
// side, table and column. The choice is made once, here, from the
// catalogs of both sides, and depends only on the table: both directions
// decide a conflict the same way.
//
// Commit timestamps are known only where the server records them
// (track_commit_timestamp = on). When a side does not, the conflicts of
// the commit-timestamp tables go to the DLQ, with the reason and the fix,
// instead of being guessed; pgbisync warns at start-up, naming the tables.
// (With one side recording them, LWW would order some conflicts by the
// changes' commit times and dead-letter others, depending on which
// direction met them first.)
//
// Every table's choice is logged at start-up. It returns the resolver and
// its description for the start-up summary.
func lwwPolicy(cfg *config, sides [2]*side, logger *slog.Logger) (duplex.Resolver, string, error) {
	column, err := resolve.NewLWW(cfg.lwwColumn, cfg.skew)
	if err != nil {
		return nil, "", fmt.Errorf("-skew: %w", err)
	}
	lacking := map[duplex.Table][]string{} // table -> sides without the column
	var errs []error
	for _, s := range sides {
		types := make(map[duplex.Table]map[string]string, len(s.tables))
		for t, info := range s.tables {
			types[t] = info.types
		}
		without, err := column.TablesWithoutColumn(types)
		if err != nil {
			errs = append(errs, fmt.Errorf("-conflict lww -lww-column %s (on -%s): %w", cfg.lwwColumn, s.name, err))
		}
		for _, t := range without {
			lacking[t] = append(lacking[t], "-"+s.name)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, "", err
	}

	var off []string // sides not recording commit timestamps
	for _, s := range sides {
		if !s.commitTimes {
			off = append(off, "-"+s.name)
		}
	}
	var byCommit duplex.Resolver = &resolve.LWW{Skew: cfg.skew}
	if len(off) > 0 {
		byCommit = unknownCommitTimes{column: cfg.lwwColumn, off: strings.Join(off, " and ")}
	}
	perTable := make(map[duplex.Table]duplex.Resolver, len(cfg.tables))
	var commitTables []duplex.Table
	for _, t := range cfg.tables {
		missing := lacking[t]
		if len(missing) == 0 {
			perTable[t] = column
			logger.Info("conflict policy", "table", t.String(), "policy", "lww on column "+cfg.lwwColumn)
			continue
		}
		perTable[t] = byCommit
		commitTables = append(commitTables, t)
		why := "no " + cfg.lwwColumn + " column"
		if len(missing) < len(sides) {
			why += " on " + missing[0]
		}
		logger.Info("conflict policy", "table", t.String(), "policy", "lww on commit timestamps ("+why+")")
	}
	desc := fmt.Sprintf("lww(%s, skew %s)", cfg.lwwColumn, cfg.skew)
	if len(commitTables) == 0 {
		return column, desc, nil
	}
	desc = fmt.Sprintf("lww(%s, skew %s, commit timestamps on %s)", cfg.lwwColumn, cfg.skew, tableList(commitTables))
	for _, s := range sides {
		if !s.commitTimes {
			logger.Warn("track_commit_timestamp is off: conflicts on tables without the lww column cannot be ordered and go to the dead-letter queue",
				"side", s.name, "tables", tableList(commitTables), "lww_column", cfg.lwwColumn, "fix", enableCommitTimes)
		}
	}
	return resolve.ByTable{Tables: perTable}, desc, nil
}

// unknownCommitTimes is last-write-wins on commit timestamps where a side
// does not record them: every conflict it is shown goes to the DLQ, saying
// why and how to fix it. The rows stay as they are until someone resolves
// the entry.
type unknownCommitTimes struct {
	column string // -lww-column
	off    string // the sides without track_commit_timestamp, "-a and -b"
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
