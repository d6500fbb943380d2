package cdctest

import (
	"context"
	"testing"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/suite"
)

// Features lists what a source supports; the suite skips the checks of
// features a source lacks. Leaving a field false weakens the suite, so set
// every field the source really supports.
type Features struct {
	// BeforeImage: updates and deletes carry Change.Before, the full row
	// before the change (PostgreSQL with REPLICA IDENTITY FULL).
	BeforeImage bool
	// Deletes: deletes are captured (false for polling without tombstones).
	Deletes bool
	// Origins: Change.Origin reports the replication origin of transactions
	// made under one (see Harness.WriteAsOrigin).
	Origins bool
	// Transactions: the changes of one transaction share their CommitTime and
	// are delivered contiguously, in the order they were written.
	Transactions bool
	// EveryVersion: every committed version of a row is delivered, in commit
	// order (log-based capture). Without it the source may coalesce the
	// versions of a row written between two captures (polling): the suite
	// then requires only that the versions delivered for each key are a
	// subsequence, in order, of the versions written, ending with the last.
	EveryVersion bool
	// ExactResume: after Ack(p) and a restart, nothing at or before p is
	// delivered again. Without it a restart may redeliver changes before p
	// (the contract allows a source to store acknowledgements at its own
	// pace), and the suite checks only that nothing after p is lost.
	ExactResume bool
}

// Writer makes changes to the Harness's table. Every method writes the row
// with the given id; name, n and note are the table's other columns.
type Writer interface {
	// Insert inserts the row (id, name, n) with note NULL.
	Insert(ctx context.Context, id int64, name string, n int64) error
	// Update sets the columns in set (a subset of name, n and note; a nil
	// value sets NULL) on the existing row id.
	Update(ctx context.Context, id int64, set duplex.Values) error
	// Delete deletes the existing row id.
	Delete(ctx context.Context, id int64) error
}

// Harness pairs a source with a way to make changes on the system it
// captures. [NewFunc] builds one per subtest; it must be isolated from every
// other Harness (its own table and stored position) and clean up after
// itself with t.Cleanup.
//
// The Writer methods each write in their own transaction, made by a user
// (without a replication origin).
type Harness interface {
	Writer

	// Source returns a new instance of the source under test, on the
	// Harness's stored position (its slot): calling it again simulates a
	// restart of the process. The stored position exists from the moment
	// NewFunc returns, so every change written through the Harness is
	// captured. The suite calls Stream with from "" unless it tests from, and
	// never runs two Streams of one Harness at the same time.
	Source() duplex.ChangeSource
	// Table returns the table the Harness writes to: columns id (int64,
	// the primary key), name (text, not null), n (int64, not null) and note
	// (nullable text), created for this Harness. The source may capture other
	// tables too; the suite ignores their changes.
	Table() duplex.Table
	// WriteAsOrigin inserts the row (id, name, 0) with note NULL in a
	// transaction made under the replication origin origin. It is used only
	// when Features.Origins is set; other harnesses may return an error.
	WriteAsOrigin(ctx context.Context, origin string, id int64, name string) error
	// Tx runs fn in one transaction: the writes fn makes through w commit
	// together, or not at all when fn returns an error, which Tx then
	// returns (possibly wrapped). w must not be used after fn returns.
	Tx(ctx context.Context, fn func(w Writer) error) error
}

// PositionComparer is implemented by a Harness whose source's positions can
// be ordered. With it, the suite checks that the positions of delivered
// changes never decrease; without it, only that a position never reappears
// once a later one was delivered.
type PositionComparer interface {
	// ComparePositions returns -1, 0 or +1 as a is before, equal to or after b.
	ComparePositions(a, b duplex.Position) int
}

// NewFunc returns a fresh Harness for one subtest. It registers its own
// cleanup with t.Cleanup and fails t when it cannot build the Harness.
type NewFunc func(t *testing.T) Harness

// Run runs the conformance suite for a source with features f, as parallel
// subtests of t, each on its own Harness from newFunc.
func Run(t *testing.T, f Features, newFunc NewFunc) {
	t.Helper()
	if newFunc == nil {
		t.Fatal("cdctest: nil NewFunc")
	}
	suite.Run(t, []suite.Case[*bundle]{
		{Name: "InsertUpdateDelete", Run: testInsertUpdateDelete},
		{Name: "CommitOrder", Run: testCommitOrder},
		{Name: "StableIDsOnRedelivery", Run: testStableIDsOnRedelivery},
		{Name: "ResumeAfterAck", Run: testResumeAfterAck},
		{Name: "AckNeverSkips", Run: testAckNeverSkips},
		{Name: "ResumeFromPosition", Run: testResumeFromPosition},
		{Name: "NullVersusMissing", Run: testNullVersusMissing},
		{Name: "UnchangedNotNull", Run: testUnchangedNotNull},
		{Name: "TransactionGrouping", Run: testTransactionGrouping, Skip: suite.Unless(f.Transactions, "source", "Features.Transactions")},
		{Name: "RollbackNotCaptured", Run: testRollbackNotCaptured},
		{Name: "OriginReported", Run: testOriginReported, Skip: suite.Unless(f.Origins, "source", "Features.Origins")},
		{Name: "CancelReturnsNil", Run: testCancelReturnsNil},
		{Name: "FnErrorStops", Run: testFnErrorStops},
		{Name: "IDsUnique", Run: testIDsUnique},
		{Name: "LargeBatchBounded", Run: testLargeBatchBounded},
	}, func(t *testing.T) *bundle { return setup(t, f, newFunc) })
}
