package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/check/checkpg"
)

// triggerConfig is what -fire-triggers and -all-triggers ask of the
// appliers.
func triggerConfig(cfg *config) applypg.TriggerConfig {
	return applypg.TriggerConfig{All: cfg.allTriggers, Fire: cfg.fireTriggers}
}

// preflight builds the sync's checker from the flags.
func preflight(cfg *config, sides [2]*side, logger *slog.Logger) (*checkpg.Checker, error) {
	ri := ""
	if cfg.cdc == cdcLogical {
		ri = "set"
		if cfg.noReplicaIdentity {
			ri = "full"
		}
	}
	c, err := checkpg.New(checkpg.Config{
		Sync: cfg.name, A: checkpg.Side{Name: sides[0].name, Pool: sides[0].pool}, B: checkpg.Side{Name: sides[1].name, Pool: sides[1].pool},
		Tables: cfg.tables, Sequences: checkpg.SequenceFix(cfg.sequences), ReplicaIdentity: ri, Triggers: triggerConfig(cfg), Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("preflight: %w", err)
	}
	return c, nil
}

// checkOnly is -check: it prints the preflight report on stdout, changing
// nothing, and fails with a *duplex.PreflightError (status 2) when it
// found blockers.
func checkOnly(ctx context.Context, cfg *config, sides [2]*side, stdout io.Writer, logger *slog.Logger) error {
	c, err := preflight(cfg, sides, logger)
	if err != nil {
		return err
	}
	r, err := c.Check(ctx, duplex.CheckParams{})
	if err != nil {
		return err
	}
	if err := r.Write(stdout); err != nil {
		return err
	}
	if r.Count(duplex.Blocker) > 0 {
		return &duplex.PreflightError{Report: r}
	}
	return nil
}
