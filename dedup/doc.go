// Package dedup provides [duplex.Deduper] implementations: remembering which
// change IDs have been settled on a target, so a change the source delivers
// again (at-least-once delivery after a restart or reconnect) is recognised
// and skipped.
//
// # Contract
//
// Every Deduper in duplex keeps the contract of [duplex.Deduper]:
//
//   - Seen answers, for each id, whether it was marked, in the order of the
//     ids. It never marks: asking is free of side effects on the answer, so a
//     change that is looked up and then fails to apply is looked up again,
//     and applied, on its next delivery. (Marking on lookup, the textbook
//     "SET NX then process", loses the change when the processing fails.)
//   - Mark records ids as settled. The Pipeline calls it only after the
//     changes were committed on the target, dead-lettered or found to be
//     no-ops. Marking an id twice is not an error.
//   - Both are safe for concurrent use and honour ctx.
//
// A Deduper is a fast pre-filter, not the source of truth: an Applier
// that is a [duplex.Ledger] records every applied change ID in the
// target's own transaction, and the Pipeline asks it about what the
// Deduper has not seen. An id the Deduper forgot (evicted, expired, lost
// with the process) therefore costs a lookup, never a change applied twice
// or lost.
//
// # Implementations
//
// [Memory] is a bounded, in-process Deduper with LRU eviction and an
// optional TTL. It does not survive a restart.
//
// Package [github.com/duplexsync/duplex/dedup/deduptest] is the conformance
// suite every Deduper passes.
package dedup
