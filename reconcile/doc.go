// Package reconcile tells whether the two sides of a sync have drifted apart
// and repairs what it finds.
//
// # Parity
//
// A [Checker] compares two PostgreSQL databases table by table without
// locking anything or scanning a table in one go. It walks side A's primary
// key in order through its index, ChunkSize rows at a time (then side B's
// keys after A's last one), and for each key range compares, on both sides,
// the row count and the sum of a 64-bit hash of each row's synced columns
// (hashtextextended of the row's text form). Every statement reads one range
// of one side in a short read-only transaction that pins the settings shaping
// values' text form (DateStyle, IntervalStyle, extra_float_digits,
// bytea_output, TimeZone, lc_monetary), so equal values hash equally whatever
// each database's defaults. Config.Pause spaces the ranges out to bound the
// load. Multi-column and non-integer keys work (row comparisons in the key
// order of each side's own collation).
//
// The sync is live while the check runs, so a range can differ only because
// a change is on its way: ranges that differ are checked again after
// Config.RecheckDelay, and only those that still differ are reported
// ([Report.Mismatched]); the others count as [Report.FalseAlarms].
//
// [Checker.Check] checks every table once; [Checker.Run] checks them
// periodically and hands each [Report] to a callback (metrics.Parity turns
// them into Prometheus metrics).
//
// # Repair
//
// A [Reconciler] takes a Report and, for every mismatched range, reads the
// keys and row hashes of both sides (in pages), finds the keys whose rows
// differ or exist on one side only, and calls [RepairFunc] for each:
// (*duplex.Sync).Reconcile, which decides the row through the sync's
// Resolver (field authority, last-write-wins, ...) and writes it where it
// differs, or dead-letters it. The [RepairReport] counts the keys by outcome
// and lists the first ones. ReconcilerConfig.Concurrency repairs several
// keys at once; [Reconciler.Diff] lists the differences without repairing
// them (a dry run).
//
// Two systems that already hold data when the sync starts are brought
// together by the Sync itself (onboarding: duplex.Sync.Onboard, which
// Sync.Run runs on the first start), and (*duplex.Sync).ReconcileTables
// compares and repairs whole tables in batched key ranges with the same
// engine, instead of one key at a time. The two steps below remain
// the way to find drift without repairing it, and to repair only the ranges
// a check found.
//
//	checker, _ := reconcile.NewChecker(poolA, poolB, reconcile.Config{Tables: tables})
//	rec, _ := reconcile.NewReconciler(checker, reconcile.ReconcilerConfig{Repair: sync.Reconcile})
//	reports, _ := checker.Check(ctx)
//	for _, r := range reports {
//		if !r.Clean() {
//			rr, err := rec.Reconcile(ctx, r)
//			...
//		}
//	}
//
// # Limits
//
// Both sides must order keys the same way: text keys under different
// collations on the two databases make ranges cover different keys and are
// reported as mismatches. Values must render the same text on both sides:
// columns of different types or typmods (numeric(10,2) against numeric)
// can differ in text while being equal, and are reported too (the repair
// then finds them unchanged).
package reconcile
