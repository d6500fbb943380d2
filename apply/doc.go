// Package apply is the home of duplex's appliers: the implementations of
// [github.com/duplexsync/duplex.Applier] that read the current rows of a
// target system and write the Pipeline's decisions into it.
//
// This package itself holds no code yet; the appliers live in subpackages.
//
// # Appliers
//
//   - applypg: PostgreSQL. Each batch is one transaction made
//     under the sync's replication origin (so the other direction's change
//     capture drops it); every write checks its expectation
//     (Write.Expect) and the batch fails with
//     [github.com/duplexsync/duplex.ErrStale] when a user changed the row in
//     between; the source's checkpoint and the applied change IDs are
//     recorded in the same transaction, in the sync's own schema
//     ([github.com/duplexsync/duplex.Checkpointer],
//     [github.com/duplexsync/duplex.Ledger]); errors are classified from
//     their SQLSTATE (transient, unavailable, permanent) and name the
//     failing write with a [github.com/duplexsync/duplex.BatchError].
//   - memdb: [github.com/duplexsync/duplex/memdb.Applier] writes into the
//     in-memory database, with the same transactional behaviour, for tests,
//     demos and users' unit tests.
//
// # Contract
//
// Every applier follows the contract documented on
// [github.com/duplexsync/duplex.Applier]: Lookup returns rows in the order
// of its keys (nil for absent rows), and Apply writes a batch atomically and
// in order, is safe to repeat, and never overwrites a user's edit made after
// the Pipeline read the row.
//
// # Conformance
//
// Package github.com/duplexsync/duplex/apply/applytest is the conformance
// suite that every applier runs (see
// [github.com/duplexsync/duplex/apply/applytest.Run]); third-party
// appliers can run it too.
package apply
