// Package duplex builds bi-directional data syncs between business systems:
// two databases (a CRM and a billing system, say) that both change the same
// records, kept in agreement without silent corruption, lost changes or
// sync loops.
//
// # Model
//
// A [Change] is one committed row change captured on one system, with a
// stable ID, the row's primary [Key], before and after images, its commit
// time and an opaque resume [Position]. A [ChangeSource] streams changes; an
// [Applier] reads and writes the other system; a [Resolver] decides fields
// both sides changed; a [Deduper] remembers what was settled; a
// [DeadLetterSink] keeps what cannot be applied, with its payload and
// reason; a [LoopGuard] drops the sync's own writes coming back.
//
// # Pipeline
//
// A [Pipeline] moves changes one way: source, loop guard, dedup, conflict
// detection against the target's current row, resolution, batched apply,
// settle, acknowledge. Its guarantees:
//
//   - A position is acknowledged to the source only when every change up to
//     it is settled: applied, dead-lettered, or known to be a duplicate, echo
//     or no-op. A crash at any moment loses nothing.
//   - Changes to one key are applied in order. A change that fails with a
//     transient error is retried with exponential backoff and jitter while
//     changes to other keys go on; later changes to its key wait behind it.
//   - A failing batch is split to find the one bad change, which goes to the
//     DLQ (permanent errors at once, unclassified ones after
//     Options.MaxAttempts) while the rest commit. An outage of either system
//     ([Unavailable]) or a transient error ([Transient]: serialization
//     failure, deadlock) is waited out however long it lasts, and never
//     dead-letters anything: a two-way merge's write-back included.
//   - Writes carry the values they were decided on ([Write].Expect); when the
//     target row moved in between, the change is decided again, so a user's
//     edit is never overwritten unseen.
//   - With an Applier that is a [Ledger] (it records change IDs in the apply
//     transaction), every change is applied exactly once in effect, even when
//     the connection drops during COMMIT or the process crashes.
//
// A [Sync] runs the two Pipelines of a two-way sync together.
//
// The engine's stages (intake, planning, deciding, applying, settling,
// operator actions), one file each, are drawn in docs/architecture.md.
//
// # Conflicts
//
// A conflict exists only when both sides changed the same field since they
// last agreed. Fields only one side changed merge without asking anyone;
// the rest go to the Resolver as a [Conflict]. Insert-insert, update-delete
// and delete-update are conflicts too. Undecided conflicts go to the DLQ and
// the target row stays as it is.
//
// A [Sync] merges: for every key a chunk of changes touches, it reads both
// systems' current rows and the row they last agreed on (an
// [AgreementStore], shared by both directions), merges them field by field
// through the resolvers, writes the result to the target and, where the
// source lacks part of it, back to the source (compare-and-set on both),
// and records the result as the new agreement. Deciding each change in each
// direction on its own cannot be made safe: a field that went p->r->p on
// one side while the other set r looks unchanged from one direction and
// changed from the other, and the two sides end swapped with nothing in the
// DLQ. A merge is idempotent, so crossing changes that arrive later find
// both rows equal to the agreement and do nothing. A one-way [Pipeline]
// (no Config.Peer) decides each change against the target's current row,
// with the source's before image as the base.
//
// # Preflight
//
// The traps of a two-way sync that are not in the change stream but in the
// schemas around it (triggers that fire on applied rows, keys fed by
// sequences on both sides, unique and foreign keys, schemas that differ)
// are looked at by a [Preflight] (check/checkpg for PostgreSQL):
// [Sync.Check] reports them table by table without changing anything, and
// [Sync.Run] checks again (making the fixes its options ask for) and does
// not start on a [Blocker] ([PreflightError]).
//
// # Errors
//
// Errors are classified by behaviour ([ErrorClass]): mark your own with
// [Transient], [Unavailable] or [Permanent]. Unknown errors are retried a
// bounded number of times, then dead-lettered; transient and unavailable
// ones for as long as they last.
//
// The packages cdc, apply, check, resolve, dedup, dlq, loopguard and metrics hold
// the implementations; memdb is an in-memory database implementing the
// source and applier interfaces for tests and demos.
package duplex
