package reconcile_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/metrics"
	"github.com/duplexsync/duplex/reconcile"
)

// A parity check every ten minutes, exported to Prometheus, with the
// differences it finds repaired through the sync's resolvers.
func ExampleChecker_Run() {
	ctx := context.Background()
	var poolA, poolB *pgxpool.Pool // the two systems' databases
	var sync *duplex.Sync          // the running two-way sync between them

	checker, err := reconcile.NewChecker(poolA, poolB, reconcile.Config{
		Tables: []reconcile.TableConfig{{Table: duplex.Table{Schema: "public", Name: "customers"}}},
		Pause:  10 * time.Millisecond, // between ranges of 10,000 rows
	})
	if err != nil {
		panic(err)
	}
	reconciler, err := reconcile.NewReconciler(checker, reconcile.ReconcilerConfig{Repair: sync.Reconcile})
	if err != nil {
		panic(err)
	}
	parity := metrics.NewParity()
	prometheus.MustRegister(parity)
	_ = checker.Run(ctx, 10*time.Minute, func(ctx context.Context, r *reconcile.Report) {
		parity.RecordCheck(r)
		if r.Err != nil || r.Clean() {
			return
		}
		rr, err := reconciler.Reconcile(ctx, r)
		parity.RecordRepair(rr)
		if err != nil {
			slog.WarnContext(ctx, "reconcile failed", "table", r.Table.String(), slog.Any("err", err))
		}
	})
}
