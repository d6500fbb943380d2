// Package cdc is the home of duplex's change capture: the implementations
// of [github.com/duplexsync/duplex.ChangeSource] that read committed row
// changes from a system and hand them to a Pipeline in commit order, each
// with a stable change ID and a resume position.
//
// This package itself holds no code yet; the sources live in subpackages.
//
// # Sources
//
// Each source lives in its own subpackage, named after how it captures:
//
//   - pglogical: PostgreSQL logical replication with the pgoutput
//     plugin. It streams from a replication slot, so nothing committed is
//     missed across restarts; with REPLICA IDENTITY FULL, updates and
//     deletes carry before images, and the replication origin of each
//     transaction is reported so the sync can drop its own writes. Change
//     IDs are derived from the slot name, the commit LSN and the ordinal of
//     the change in its transaction. It fails with a clear error when the
//     server's wal_level is not logical.
//   - pgpoll (planned): polling a table by an updated_at (or another
//     monotonic) column, for databases where logical replication is not
//     available. It has no before images and sees deletes only through
//     tombstones; the Pipeline's store of last-synced field hashes plays the
//     role of the before image and of the loop guard.
//   - memdb: [github.com/duplexsync/duplex/memdb.Source], the change log
//     of the in-memory database, is a complete source with before images,
//     transactions and origins, for tests, demos and users' unit tests.
//
// # Contract
//
// Every source follows the contract documented on
// [github.com/duplexsync/duplex.ChangeSource]: Stream delivers batches in
// commit order from one goroutine at a time and returns nil when its context
// is canceled; delivery is at-least-once after the last acknowledged
// position, with the same change IDs on redelivery; and Ack(p) settles p and
// everything delivered before it, never more.
//
// # Conformance
//
// Package github.com/duplexsync/duplex/cdc/cdctest is the conformance suite
// that every source runs (see
// [github.com/duplexsync/duplex/cdc/cdctest.Run]); third-party sources can
// run it too.
package cdc
