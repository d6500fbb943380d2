// Package dlq keeps the dead-letter queue: the changes a Pipeline could not
// apply (conflicts nobody won, permanent errors, exhausted retries), with
// everything an operator needs to decide what to do with them.
//
// # Two sides
//
// The Pipeline writes through [duplex.DeadLetterSink]: Put stores a
// [duplex.DeadLetter] durably. Operators and tools (an admin HTTP handler,
// metrics) read and act through [Store]: List and Get entries, move them
// between statuses with SetStatus, count what is pending with Depth, and
// find the pending entries of one row with PendingForKey. Every
// implementation ([Memory]; PostgreSQL in dlqpg) implements both.
//
// # Entries
//
// An [Entry] is one dead-lettered change and its history. The same change
// put again (same Sync, Direction and Change.ID, as after a crash, or when
// a retried change fails again) updates its entry instead of adding a
// second: LastSeen, Count, Attempts, Error, Reason and Conflict take the
// new values, and an entry that was retried, dismissed or resolved becomes
// pending again, since it failed again. Nothing is ever deleted: dismissing
// an entry keeps it, with who dismissed it.
//
// # One pending entry per held row
//
// A row a two-way merge holds (ConflictInfo.Merge: fields both sides
// changed that no resolver decided) is held again by every later merge of
// the row, in either direction, until someone resolves it. Those puts do
// not add entries: while the row has a pending entry for the same held
// fields ([RowIdentity]: sync, table, key, field set), each later put
// refreshes it ([Absorb]): the entry takes the newest dead letter (both
// sides' current rows, the base, the change and direction that found it),
// Count grows, and the version it replaces goes to History, which keeps
// the newest [HistoryLimit] superseded versions (older ones are dropped;
// Count still counts them). A put older than the entry's (a redelivery)
// only goes to History. Resolving the entry therefore decides the row's
// newest versions. Once the entry is resolved, retried or dismissed, a new
// hold of the row opens a new entry. Dead letters of failed changes and
// one-way conflicts stay one entry per change: each must be replayed.
//
// A unique collision (ConflictInfo.Unique: the same value of a unique
// constraint other than the primary key written on both sides under
// different keys) is one entry too, whichever direction refused its row:
// [RowIdentity] is the sync, the table, the constraint and the contested
// values, so the entry holds both rows (the incoming one and the one
// holding the value, with its key) and the constraint's name.
//
// # Keep both under new keys
//
// Two different rows made under one key, one on each side (both sides'
// sequences handed out the same id), are an insert-insert conflict. The
// admin's keep-both action ([KeyActions], which [SyncActions] implements)
// gives one side's row a new key drawn from that side's sequence, on both
// sides. The key is recorded in the entry's resolution before anything is
// written, so repeating the action after a failure finishes with the same
// key. It is refused, saying why and what to do, for unique collisions
// (the keys differ already: the value must change) and keys no sequence
// feeds.
//
// [Entry.ThreeWay] lays out an entry's conflict as base, side A and side
// B field by field (differing, changed and held fields marked), with the
// resolver that held it and its explanation; the JSON form of an Entry
// carries it as "three_way", with "table" and "key" at the top level.
//
// # Statuses
//
// An entry is [StatusPending] until someone acts on it: [StatusRetried]
// (sent back through the Pipeline), [StatusDismissed] (dropped on purpose)
// or [StatusResolved] (fixed by hand or by choosing a winner). Store.SetStatus
// is a compare-and-set: it moves an entry to a status only from the statuses
// the caller names, so an admin action clicked twice, or by two operators at
// once, is harmless: repeating a transition on an entry already in the
// target status returns it unchanged, and a transition from a status the
// caller did not expect fails with a [*TransitionError].
//
// Package [github.com/duplexsync/duplex/dlq/dlqtest] is the conformance
// suite every implementation passes.
package dlq
