// Package cdctest is the conformance suite that every
// [github.com/duplexsync/duplex.ChangeSource] must pass: the in-memory
// source of package memdb, PostgreSQL logical replication, updated_at
// polling, and third-party sources alike.
//
// # Running it
//
// An implementation calls [Run] from one of its tests with the [Features] it
// supports and a [NewFunc] that builds a fresh [Harness] for each subtest:
//
//	func TestConformance(t *testing.T) {
//		t.Parallel()
//		cdctest.Run(t, cdctest.Features{BeforeImage: true, Deletes: true}, func(t *testing.T) cdctest.Harness {
//			return newHarness(t) // a table, a slot, and a way to write to the table
//		})
//	}
//
// Every subtest calls t.Parallel and builds its own Harness, so a Harness
// must isolate its table and its stored position (slot) from every other
// Harness. Within one Harness the suite runs at most one Stream at a time,
// and lets it return before it starts the next one, so a source whose slot
// admits a single reader (PostgreSQL) is fine.
//
// Sources should also verify that they leak no goroutines, for instance
// with go.uber.org/goleak in TestMain; the suite itself checks that Stream
// returns within 5 seconds of its context being canceled.
//
// # What it checks
//
// The subtests check the contract documented on
// [github.com/duplexsync/duplex.ChangeSource] and
// [github.com/duplexsync/duplex.Change]:
//
//   - InsertUpdateDelete: operations, keys, after images decoded as int64,
//     string and nil, before images (Features.BeforeImage), deletes carrying
//     their key (Features.Deletes).
//   - CommitOrder: the changes to each key arrive in commit order, and the
//     positions of delivered changes never decrease.
//   - StableIDsOnRedelivery: a restart without Ack delivers the same changes
//     with the same IDs and positions.
//   - ResumeAfterAck, AckNeverSkips, ResumeFromPosition: after Ack(p), or
//     with Stream's from set to p, everything after p is delivered and
//     nothing after p is lost, whatever was written while the source was
//     running or stopped.
//   - NullVersusMissing, UnchangedNotNull: a NULL is a present nil; a column
//     the source did not send (unchanged TOAST) is absent and listed in
//     Change.Unchanged, never reported as NULL.
//   - TransactionGrouping (Features.Transactions), RollbackNotCaptured,
//     OriginReported (Features.Origins).
//   - CancelReturnsNil, FnErrorStops: Stream returns nil promptly on
//     cancel (also while fn is blocked) and returns fn's error without
//     calling fn again.
//   - IDsUnique, LargeBatchBounded: distinct changes have distinct IDs;
//     10,000 inserts all arrive, once each.
//
// Every Stream the suite collects changes from is also checked for these
// invariants: fn is never called concurrently, every change carries an ID,
// a Source, a Position and a CommitTime, positions never decrease, and no
// delivered batch is modified after fn returns.
//
// # Positions
//
// Positions are opaque, so the suite can check that they never decrease only
// when the Harness also implements [PositionComparer]; otherwise it checks the
// weaker property that a position, once left behind, never reappears.
package cdctest
