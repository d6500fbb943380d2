// Package agreepg keeps the agreement records of a two-way sync in
// PostgreSQL, in the table <schema>.agreements of the sync's own schema (by
// default "duplex", the schema of internal/pgstate).
//
// [Records] is the records' SQL: apply/applypg uses it to write a system's
// records in the same transaction as the writes they describe (which is
// what makes a two-way merge crash-safe) and to read them back. [Store] is
// a [duplex.AgreementStore] over the same table, for an Applier that does
// not keep records itself: its records are saved after the writes commit.
//
// # Rows
//
// One row per sync, system, table and key: sync is Config.Sync, system the
// system whose record it is, tbl the table ("schema.name", or a quoted form
// when a part holds a dot or a quote), key the duplex.Key.String form (text
// that PostgreSQL cannot hold, with NUL or invalid UTF-8, is stored as
// U+FFFD followed by its base64). The agreed row and Peer are stored in the
// binary row form of internal/valuecodec (AppendRow; bytea: the records are
// duplex's own, and are written and read with every merge), which keeps the
// Go type of every value (records written in its typed JSON still read); "row" is NULL when both systems agreed the row does not
// exist, and peer_kind says where Peer is (see DDL).
//
// Load is one statement whatever the number of keys (an index probe per
// key); a save is one batch: a plain insert of the keys' first records
// (Version 1), an upsert of the others and a delete of the records that
// are not Known (of a key given twice the last wins). When a first record
// exists after all, the batch is sent again with the upsert only
// (Records.QueueSave).
//
// # Cache
//
// A Store has a write-through memory cache of Config.Cache keys in front of
// the table: Load queries only the keys it misses, and Save updates it once
// the statement succeeded. It assumes that this Store is the only writer of
// its system's records; another writer is not seen by a Load of a cached
// key. Cache: -1 turns it off.
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
