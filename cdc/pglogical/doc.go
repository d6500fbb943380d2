// Package pglogical is a duplex.ChangeSource that captures committed changes
// from PostgreSQL through logical replication (the built-in pgoutput plugin,
// protocol version 1, via jackc/pglogrepl).
//
// A Source owns one replication slot and one publication per sync and
// system, both named SlotName(sync, system) ("duplex_<sync>__<system>"),
// created by Setup when missing. Setup also checks every table (it exists,
// has a primary key and REPLICA IDENTITY FULL, which Config.SetReplicaIdentity
// sets) and names the table at fault otherwise. Setup(ctx, true), for a sync
// that has a stored position, refuses to create a slot that has gone
// missing: the changes made since would be lost silently.
//
// Setup creates a missing slot over a replication connection with
// EXPORT_SNAPSHOT and keeps that connection open: Snapshot names a snapshot
// of the database as of the slot's consistent point (every transaction it
// does not see is in the slot), which a Sync's onboarding reads at
// (duplex.SnapshotExporter). ReleaseSnapshot, Stream and Close give it up.
//
// Changes arrive in commit order, in batches, each with an ID that is the
// same on every redelivery (slot, commit LSN, ordinal in the transaction),
// before and after images decoded to Go values, the commit time and a
// Position. The position reported to the server as flushed is only ever one
// the Pipeline acknowledged, so after a crash, a killed walsender or a lost
// connection the slot replays from the last settled change and nothing is
// lost; the Source reconnects with backoff by itself. Transactions of any
// size stream with bounded memory.
//
// Loop prevention: transactions made under one of Config.SkipOrigins
// (replication origins; the sync's appliers set OriginName(sync)+":"+target)
// are dropped before decoding. For roles that may not use origins,
// Config.Marker recognises the sync's transactions by a marker row the
// applier writes in the same transaction.
//
// RetainedWAL reports how much WAL the slot holds back on the server, for
// metrics and alerts. Config.Heartbeat keeps an idle database's slot moving.
package pglogical
