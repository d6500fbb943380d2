package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/duplexsync/duplex/cdc/pgpoll"
	"github.com/duplexsync/duplex/loopguard"
)

// pollDeletes maps -poll-deletes to pgpoll's delete detection.
var pollDeletes = map[string]pgpoll.DeleteDetection{
	"none":       pgpoll.DeletesNone,
	"keydiff":    pgpoll.DeletesKeyDiff,
	"tombstones": pgpoll.DeletesTombstones,
}

// pollSource sets up -cdc poll for s: a source polling s's tables by
// -poll-column, and, since polling cannot tell the sync's own writes from
// users', a content loop guard: the applier writing s remembers what it
// wrote and s's source drops those rows when it reads them back.
func pollSource(ctx context.Context, cfg *config, s *side, logger *slog.Logger) error {
	src, err := pgpoll.New(ctx, pgpoll.Config{
		ConnString: s.dsn, Sync: cfg.name, System: s.name, Tables: cfg.tables,
		Column: cfg.pollColumn, ColumnTimeZone: cfg.pollTimeZone, Interval: cfg.pollInterval, DeleteDetection: pollDeletes[cfg.pollDeletes],
		Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("-%s: %w", s.name, err)
	}
	s.endpoint.Source, s.close = src, src.Close
	if err := src.Setup(ctx); err != nil {
		return fmt.Errorf("-%s: %w", s.name, err)
	}
	// Remembered writes wait this long for their echo: many polls, yet
	// short enough that a user's identical write soon counts as theirs.
	h := loopguard.NewHashes(loopguard.HashesConfig{TTL: max(30*time.Second, 20*cfg.pollInterval)})
	s.endpoint.Applier = loopguard.Remembering(s.app, h)
	s.endpoint.LoopGuard = h
	return nil
}
