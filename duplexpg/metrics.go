package duplexpg

import (
	"context"
	"log/slog"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/metrics"
)

// conflictResolutions are the resolution labels of duplex_conflicts_total.
var conflictResolutions = []string{"applied", "merged", "kept_target", "dead_lettered"}

// deadLetterReasons are the reasons a change is dead-lettered for.
var deadLetterReasons = []duplex.Reason{duplex.ReasonConflict, duplex.ReasonPermanentError,
	duplex.ReasonRetriesExhausted, duplex.ReasonTruncate, duplex.ReasonInvalid}

// initCounters creates the applied and conflict counters of every
// direction and table at zero, so that they show (and rate() works) from
// the start, not from the first event.
func initCounters(m *metrics.Prometheus, directions []string, tables []duplex.Table) {
	for _, d := range directions {
		for _, t := range tables {
			m.Collectors("applied", d, t.String())
			for k := duplex.UpdateUpdate; k <= duplex.DeleteUpdate; k++ {
				for _, r := range conflictResolutions {
					m.Collectors("conflicts", d, t.String(), k.String(), r)
				}
			}
		}
	}
}

// zeroDepths reports a zero DLQ depth for every direction, table and
// reason without pending entries, so that duplex_dlq_depth shows an empty
// queue as 0 rather than as no series.
func zeroDepths(depth metrics.DepthFunc, directions []string, tables []duplex.Table) metrics.DepthFunc {
	return func(ctx context.Context) ([]metrics.DepthRow, error) {
		rows, err := depth(ctx)
		if err != nil {
			return rows, err
		}
		type group struct{ direction, table, reason string }
		have := make(map[group]bool, len(rows))
		for _, r := range rows {
			have[group{r.Direction, r.Table, r.Reason}] = true
		}
		for _, d := range directions {
			for _, t := range tables {
				for _, r := range deadLetterReasons {
					if g := (group{d, t.String(), string(r)}); !have[g] {
						rows = append(rows, metrics.DepthRow{Direction: d, Table: g.table, Reason: g.reason})
					}
				}
			}
		}
		return rows, nil
	}
}

// watchRetained warns, every minute, about each slot holding back more WAL
// than limit. The slot is kept (dropping it would lose changes); the
// warning and /healthz say that the sync must catch up or be removed.
func watchRetained(ctx context.Context, slots map[string]metrics.RetainedFunc, limit int64, logger *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for name, read := range slots {
			if n, err := read(ctx); err == nil && n > limit {
				logger.Warn("replication slot retains more WAL than the limit; the server keeps it until the sync catches up",
					"slot", name, "retained_bytes", n, "limit_bytes", limit)
			}
		}
	}
}
