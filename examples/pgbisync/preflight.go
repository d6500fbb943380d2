package main

import (
	"context"
	"io"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/duplexpg"
)

// checkOnly is -check: it prints the preflight report on stdout, changing
// nothing, and fails with a *duplex.PreflightError (status 2) when it
// found blockers.
func checkOnly(ctx context.Context, ends [2]*duplexpg.Endpoint, cfg duplexpg.Config, stdout io.Writer) error {
	r, err := duplexpg.Check(ctx, ends[0], ends[1], cfg)
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
