// Package deduppg is a [duplex.Deduper] kept in the target PostgreSQL
// database: the ledger of applied change IDs that the PostgreSQL applier
// writes in its apply transactions (the applied table of the sync's own
// schema, see internal/pgstate).
//
// # How it fits
//
// The applier records the ID of every change it writes in the same
// transaction as the write, so a committed write and its ledger row appear
// together or not at all: that is what makes applies exactly-once in
// effect, and why the target database is the truth about what was applied.
// [Deduper.Seen] reads that ledger; [Deduper.Mark] records the changes the
// applier never writes: no-ops, dead-lettered changes, truncates. Marking an
// ID the applier already recorded does nothing (ON CONFLICT DO NOTHING).
//
// Seen never marks, and Mark is called by the Pipeline only after the
// apply committed, so a failure between the two never loses a change.
//
// # Namespaces
//
// Rows are keyed by (sync, target, change_id): [Config.Sync] and
// [Config.Target] must be the names the applier uses for the same target,
// or the Deduper and the applier keep separate ledgers.
//
// # Errors
//
// Errors are classified like those of every duplex PostgreSQL package
// (internal/pgutil.Classify): connection problems (refused, lost, the server
// shutting down, too many connections) are marked [duplex.Unavailable];
// serialization failures, deadlocks and lock timeouts [duplex.Transient];
// data, integrity, syntax and permission errors [duplex.Permanent]. Each
// error says which call failed ("deduppg: seen: ..."). The Pipeline treats a Seen
// error as "not seen" and asks the applier's ledger instead, and logs a
// Mark error, so neither stops a sync.
//
// # Pruning
//
// The ledger grows by one row per change. [Deduper.Prune] deletes rows older
// than a given age, in small batches. Prune only beyond the oldest position
// any source could still redeliver (its acknowledged position, plus a margin
// for restores of the source): a change redelivered after its row was pruned
// is decided again against the target's current row.
package deduppg
