// Package dlqpg is a dead-letter queue kept in PostgreSQL: a
// [duplex.DeadLetterSink] and a [dlq.Store] over the table
// <schema>.dead_letters of the sync's own schema (by default "duplex", the
// schema of internal/pgstate), which [New] creates when it is missing.
//
// # Entries
//
// One row per entry. Put is one transaction: it locks the entry of the
// same change (same Sync, Direction and Change.ID) or, for a row held by a
// two-way merge, the row's pending entry (row_key, dlq.RowIdentity, unique
// among pending entries), folds the put into it with dlq.Absorb (newest
// versions, count, the history column of superseded versions) and makes it
// pending again, keeping resolved_by and resolution; without such an
// entry it inserts one (two puts racing for a new held row: the unique
// index lets one insert and the other updates its entry). A change without
// an ID and outside a held row always adds a row. Put is durable when it
// returns nil (the transaction committed). Entry IDs come from an identity
// column: they increase, with gaps. New adds the row_key and history
// columns to tables created by earlier versions.
//
// The change is stored whole as jsonb (payload), and the conflict too
// (conflict), in a typed encoding that keeps the Go type of every value
// (int64 stays int64, []byte stays []byte, a nil map stays nil, times keep
// their nanoseconds and offset), so an entry read back compares equal with
// duplex.Equal to what was put. Values of types the encoding does not know
// (structs, named types) are stored in their encoding/json form and read
// back as generic JSON.
//
// Times kept in columns (FirstSeen, LastSeen and so At, UpdatedAt) have
// PostgreSQL's microsecond precision. The text columns (sync, direction,
// reason, error, resolved_by, resolution) cannot hold NUL or invalid UTF-8:
// such characters are replaced by U+FFFD there, and in the filters that
// match them; the payload keeps them.
//
// # Statuses
//
// SetStatus is a compare-and-set under the entry's row lock (SELECT ... FOR
// UPDATE), with the semantics of [dlq.Store]: repeating a transition returns
// the entry unchanged, a transition from a status the caller did not name
// fails with a [*dlq.TransitionError].
//
// # Errors
//
// Errors are classified like those of every duplex PostgreSQL package
// (internal/pgutil.Classify): connection problems are [duplex.Unavailable],
// serialization failures, deadlocks and lock timeouts [duplex.Transient],
// data, integrity, syntax and permission errors [duplex.Permanent]. Context
// cancellation is returned as is (the Pipeline treats it as unavailable).
package dlqpg
