// Package duplexpg builds a sync between PostgreSQL databases in a few
// calls, wired the way pgbisync wires it: each name is given once and
// every part derives from it.
//
// Open connects to one database of a sync, named by one sync name and one
// system name ([EndpointConfig]). [NewSync] takes two endpoints and a
// [Config] (tables, resolvers, onboarding, Redis, metrics registry) and
// builds the two-way [duplex.Sync]; [NewPipeline] builds a one-way
// [duplex.Pipeline]. Both check everything before they create anything
// (tables and keys on both sides, the resolvers against both catalogs, the
// preflight of package check/checkpg), then build, for each database:
//
//   - the change source (cdc/pglogical, or cdc/pgpoll with Config.Capture
//     Poll), its publication and replication slot;
//   - the applier (apply/applypg), which keeps the checkpoints, the dedup
//     ledger and the agreement records in the transactions of its writes;
//   - the loop guard: replication origins, or content hashes for polling;
//   - dedup: the applier's ledger, with an optional Redis front cache;
//
// and, for the sync, the dead-letter queue (dlq/dlqpg, in the first
// endpoint's database for a Sync, the target's for a Pipeline) and the
// metrics (package metrics), registered on Config.Registerer.
//
// # One instance per sync
//
// NewSync takes a session advisory lock, derived from the names, on both
// databases, and Run holds it (taking it again after a lost session): a
// second instance of the same sync, in this process or another, is
// refused with a [*LockHeldError], and an instance whose lock another
// took while its session was lost stops with [ErrLockLost].
//
// # Lost slots
//
// Once the sync has run (the target holds a checkpoint of the source), a
// missing or invalidated replication slot means changes were lost:
// NewSync refuses it with an error naming the slot. Config.RecreateSlots
// re-creates it instead, with a warning: the changes in between are then
// not synced, and the tables should be reconciled (Sync.ReconcileTables).
//
// # Errors
//
// Every function returns its errors; they name the database (by
// EndpointConfig.Label), table, column or option at fault. Close releases
// what NewSync built; Endpoint.Close releases the connections.
package duplexpg
