package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/duplexpg"
)

// mountAdmin mounts the DLQ UI (/) and JSON API (/dlq...) at the root of
// mux, behind basic auth when -admin-user is set. Without credentials the
// admin server is loopback-only (config.check enforces it) and open to
// anyone on this machine, which is logged as a warning.
func mountAdmin(mux *http.ServeMux, cfg *config, pair *duplexpg.Sync, logger *slog.Logger) error {
	auth := dlq.NoAuth
	if cfg.adminUser != "" {
		auth = dlq.BasicAuth(cfg.adminUser, cfg.adminPassword)
	} else {
		logger.Warn("the admin server has no authentication: anyone on this machine can act on the dead-letter queue; set -admin-user and -admin-password to require a login",
			"admin", cfg.admin)
	}
	h, err := dlq.NewAdmin(dlq.AdminConfig{
		Store:   pair.DeadLetters(),
		Actions: dlq.SyncActions(pair.Sync),
		Auth:    auth,
		Sides:   sideNames,
		Title:   "pgbisync " + cfg.name + ": dead letters",
		Logger:  logger,
	})
	if err != nil {
		return fmt.Errorf("-admin: %w", err)
	}
	mux.Handle("/", h)
	return nil
}
