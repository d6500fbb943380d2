// Package loopguard keeps a two-way sync from talking to itself: it
// provides [duplex.LoopGuard] implementations that recognise, among the
// changes captured on a system, the ones the sync itself wrote there, so
// they are dropped instead of being sent back where they came from.
//
// # Replication origins
//
// [Origins] is the method of choice where the source reports who made a
// change: the sync's Applier tags its sessions with a replication origin
// (PostgreSQL's pg_replication_origin_session_setup), pgoutput reports it
// with each transaction, and the guard drops changes whose
// [duplex.Change.Origin] is one of the sync's. It is exact: a user's write
// is never mistaken for the sync's, however similar.
//
// # Content hashes
//
// Sources that cannot say who made a change (polling by an updated_at
// watermark, third-party APIs) need [Hashes]: the sync remembers a
// canonical hash ([Hash]) of each row as it left it ([Remembering] does
// this around an Applier), and an incoming change whose resulting row
// hashes the same is its own write coming back. A remembered hash is
// consumed by the echo it recognises, superseded by a user's change to the
// row, expires after a TTL and is bounded in number. When unsure, Hashes
// lets a change pass: an echo that passes reaches a side that already has
// its values, while a user's change taken for an echo would be lost. The
// residual cases are listed on [Hashes].
package loopguard
