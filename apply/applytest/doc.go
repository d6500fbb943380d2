// Package applytest is the conformance suite that every
// [github.com/duplexsync/duplex.Applier] must pass: the memdb Applier, the
// PostgreSQL applier, and third-party appliers alike.
//
// # Running it
//
// An implementation calls [Run] from one of its tests with the [Features] it
// supports and a [NewFunc] that builds a fresh [Harness] for each subtest:
//
//	func TestConformance(t *testing.T) {
//		t.Parallel()
//		applytest.Run(t, applytest.Features{Checkpoints: true, Expectations: true}, func(t *testing.T) applytest.Harness {
//			return newHarness(t) // a table with a CHECK constraint, and the applier
//		})
//	}
//
// Every subtest calls t.Parallel and builds its own Harness, which must
// isolate its table and its checkpoints from every other Harness.
//
// # What it checks
//
// The subtests check the contract documented on
// [github.com/duplexsync/duplex.Applier],
// [github.com/duplexsync/duplex.Batch] and
// [github.com/duplexsync/duplex.Write]:
//
//   - InsertLookup: Lookup returns what was written, nil for absent keys, in
//     the order of its keys (duplicates included), and Apply keeps nothing of
//     the batch it was given.
//   - UpdateOnlySetFields, Delete (deleting an absent row is not an error),
//     SameKeyTwiceInBatch (writes apply in order), NullValues (NULL is a
//     present nil).
//   - BatchAtomic: a batch whose third write violates the table's CHECK
//     constraint writes nothing and fails with a permanent error. An applier
//     that knows the failing write wraps the error in a
//     [github.com/duplexsync/duplex.BatchError] with Index 2; a plain
//     permanent error (no BatchError anywhere in its chain) is accepted too,
//     and makes the Pipeline bisect the batch.
//   - StaleExpectation (Features.Expectations): a user's edit between Lookup
//     and Apply is never overwritten; the batch fails with
//     [github.com/duplexsync/duplex.ErrStale] instead, also for an insert of
//     an existing key and an update of a missing row.
//   - Checkpoint (Features.Checkpoints) and Ledger (Features.Ledger): they
//     are recorded with the batch's writes, atomically, per source.
//   - RepeatSafe: applying a batch again leaves the rows as the first apply
//     left them. A repeated insert may fail with ErrStale (an applier that
//     checks expectations) or succeed without changing the row (an upsert);
//     both are accepted, anything else is not.
//   - CanceledContext: Apply with a canceled context fails with an error
//     that is not permanent (a cancel must never dead-letter a change) and
//     writes nothing.
//   - Concurrent: several goroutines apply batches on disjoint keys through
//     one Applier at once (run the suite with -race).
package applytest
