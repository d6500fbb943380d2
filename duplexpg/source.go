package duplexpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/cdc/pgpoll"
	"github.com/duplexsync/duplex/loopguard"
)

// setupSource builds e's change source and, unless cfg.ReconcileOnly,
// creates its slot and publication when missing. resuming says the sync
// ran before (the target holds a checkpoint of this source): a missing or
// invalidated slot then means lost changes, an error unless
// cfg.RecreateSlots.
func setupSource(ctx context.Context, cfg *Config, e *Endpoint, resuming bool) error {
	if cfg.Capture == Poll {
		return pollSource(ctx, cfg, e)
	}
	src, err := pglogical.New(ctx, pglogical.Config{
		ConnString: e.cfg.ConnString, Sync: e.cfg.Sync, System: e.cfg.System, Tables: cfg.Tables,
		SetReplicaIdentity: !cfg.KeepReplicaIdentity, Logger: cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", e.cfg.Label, err)
	}
	e.endpoint.Source, e.close = src, src.Close
	e.slot, e.retained = src.Slot(), src.RetainedWAL
	if cfg.ReconcileOnly {
		return nil // nothing streams: no slot is created
	}
	lost, err := slotLost(ctx, e, src.Slot(), resuming)
	if err != nil {
		return err
	}
	if lost != "" && !cfg.RecreateSlots {
		if err := src.Setup(ctx, resuming); err != nil { // refuses it, saying why
			return fmt.Errorf("%s: %w (%s re-creates it)", e.cfg.Label, err, cfg.label("RecreateSlots"))
		}
		return nil
	}
	if lost != "" {
		if resuming, err = recreateSlot(ctx, e, src.Slot(), lost, cfg.Logger); err != nil {
			return err
		}
	}
	if err := src.Setup(ctx, resuming); err != nil {
		return fmt.Errorf("%s: %w", e.cfg.Label, err)
	}
	return nil
}

// Lost slots, as slotLost reports them.
const (
	slotDropped     = "dropped"
	slotInvalidated = "invalidated"
)

// slotLost reports whether e's slot was lost since the sync started:
// slotDropped (missing while resuming), slotInvalidated (wal_status lost)
// or "".
func slotLost(ctx context.Context, e *Endpoint, slot string, resuming bool) (string, error) {
	var status *string
	err := e.pool.QueryRow(ctx, `SELECT wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if resuming {
			return slotDropped, nil
		}
		return "", nil
	case err != nil:
		return "", fmt.Errorf("%s: read replication slot %s: %w", e.cfg.Label, slot, err)
	case status != nil && *status == "lost":
		return slotInvalidated, nil
	}
	return "", nil
}

// recreateSlot prepares the re-creation of a lost slot, logged at Warn: it
// drops an invalidated slot. The source then creates it anew (it no longer
// resumes).
func recreateSlot(ctx context.Context, e *Endpoint, slot, lost string, logger *slog.Logger) (resuming bool, err error) {
	logger.Warn("replication slot was lost after the sync started; re-creating it: the changes made in between are not synced, reconcile the tables",
		"side", e.cfg.System, "slot", slot, "lost", lost)
	if lost == slotInvalidated {
		if _, err := e.pool.Exec(ctx, `SELECT pg_catalog.pg_drop_replication_slot($1)`, slot); err != nil {
			return true, fmt.Errorf("%s: drop invalidated replication slot %s: %w", e.cfg.Label, slot, err)
		}
	}
	return false, nil
}

// pollSource sets up Capture Poll for e: a source polling e's tables, and,
// since polling cannot tell the sync's own writes from users', a content
// loop guard: the applier writing e remembers what it wrote and e's source
// drops those rows when it reads them back.
func pollSource(ctx context.Context, cfg *Config, e *Endpoint) error {
	pc := cfg.Poll
	pc.ConnString, pc.Sync, pc.System, pc.Tables, pc.Logger = e.cfg.ConnString, e.cfg.Sync, e.cfg.System, cfg.Tables, cfg.Logger
	src, err := pgpoll.New(ctx, pc)
	if err != nil {
		return fmt.Errorf("%s: %w", e.cfg.Label, err)
	}
	e.endpoint.Source, e.close = src, src.Close
	if err := src.Setup(ctx); err != nil {
		return fmt.Errorf("%s: %w", e.cfg.Label, err)
	}
	if e.app == nil { // a one-way source: nothing writes it
		return nil
	}
	// Remembered writes wait this long for their echo: many polls, yet
	// short enough that a user's identical write soon counts as theirs.
	interval := pc.Interval
	if interval <= 0 {
		interval = 200 * time.Millisecond // pgpoll's default
	}
	h := loopguard.NewHashes(loopguard.HashesConfig{TTL: max(30*time.Second, 20*interval)})
	e.endpoint.Applier = loopguard.Remembering(e.app, h)
	e.endpoint.LoopGuard = h
	return nil
}
