// Package agreepg keeps the agreed rows of a two-way sync in PostgreSQL: a
// [duplex.AgreementStore] over the table <schema>.agreed of the sync's own
// schema (by default "duplex", the schema of internal/pgstate), which [New]
// creates when it is missing. Unlike [duplex.MemoryAgreements], it
// remembers every key and survives restarts, so the merges after a restart
// still have their exact merge base.
//
// # Rows
//
// One row per sync, table and key: sync is Config.Sync, tbl the table
// ("schema.name", or a quoted form when a part holds a dot or a quote),
// key the duplex.Key.String form (text that PostgreSQL cannot hold, with
// NUL or invalid UTF-8, is stored as U+FFFD followed by its base64). The
// agreed row is stored in the typed jsonb format of internal/valuecodec,
// which keeps the Go type of every value (int64 stays int64, []byte stays
// []byte, times keep their nanoseconds and offset); NULL when both systems
// agreed the row does not exist. known and torn are the Agreement's flags.
//
// Load is one statement whatever the number of keys (an index probe per
// key), and so is Save (an upsert; of a key given twice the last wins).
//
// # Cache
//
// A write-through memory cache of Config.Cache keys sits in front of the
// table: Load queries only the keys it misses, and Save updates it once the
// statement succeeded. It assumes that this Store is the only writer of its
// sync's rows (both directions of a Sync share one Store); another process
// writing them is not seen by a Load of a cached key. Cache: -1 turns it off.
//
// # Errors
//
// Errors name the table and the number of keys and are classified like
// those of every duplex PostgreSQL package (internal/pgutil.Classify):
// connection problems are [duplex.Unavailable], serialization failures and
// deadlocks [duplex.Transient], data, integrity, syntax and permission
// errors [duplex.Permanent]. Context cancellation is returned as is (the
// Pipeline treats it as unavailable).
package agreepg
