// Package applypg is the PostgreSQL applier of duplex: it reads the current
// rows of a target database for the Pipeline ([Applier.Lookup]) and writes
// its decisions ([Applier.Apply]), exactly once and without ever
// overwriting a user's edit.
//
// An [Applier] implements [github.com/duplexsync/duplex.Applier],
// [github.com/duplexsync/duplex.Checkpointer],
// [github.com/duplexsync/duplex.Ledger] and
// [github.com/duplexsync/duplex.Truncater]. Build one with [New] on a pool
// the caller owns:
//
//	a, err := applypg.New(ctx, poolB, applypg.Config{Sync: "crm", Target: "b"})
//
// # Transactions
//
// Each Apply is one transaction on one connection: the writes in order,
// the change IDs into the ledger (the sync's applied table), the batch's
// checkpoint, COMMIT. The ledger and the checkpoint live in the sync's own
// schema (Config.Schema, created by New; see internal/pgstate), never in
// users' tables. After an error whose outcome is unknown (the connection
// broke during COMMIT) the Pipeline asks [Applier.Applied]; the Applier
// first makes sure the backend of the broken connection is gone
// (pg_terminate_backend, which waits for its exit), so the answer cannot be
// overtaken by a commit still in progress.
//
// # Expectations
//
// Every write checks what the Pipeline based its decision on
// (duplex.Write.Expect): an insert needs the key to be absent (INSERT ... ON
// CONFLICT DO NOTHING), an update needs the row and its expected values, a
// delete needs its expected values or no row at all. Values are compared in
// the column's text form after a cast to the column's declared type, so
// NULL matches NULL, NaN matches NaN, and types without an equality
// operator (json, point, xml) work. A write whose expectation fails makes
// the whole batch fail with a *duplex.BatchError wrapping duplex.ErrStale,
// and nothing is written.
//
// # Replication origins
//
// The Applier's transactions are made under a replication origin
// (Config.Origin, by default pglogical.OriginName(Sync) + ":" + Target), so
// the sync's logical replication source on the same database drops them
// instead of sending them back. A session can use an origin only when no
// other session has it set up: concurrent applies of one Applier use
// variants (Origin + "_#c2", ...), created on first use and kept, and when
// another process holds the origin the Applier falls back to one origin
// per connection (Origin + "_#p" + backend pid), dropped after use. All of
// them start with the sync's prefix and "_", which is what the source
// drops. [Applier.DropOrigins] removes them when a sync is retired; each
// origin that was used keeps one of the server's max_replication_slots
// replication-origin states until it is dropped.
//
// # Values
//
// Lookup reads every column in PostgreSQL's text output form and decodes it
// with internal/pgvalue, exactly as the logical replication source decodes
// pgoutput's text, so a value read either way has one Go representation
// (int64, float64, bool, string, []byte, time.Time, json.RawMessage for
// json, duplex.JSONB for jsonb, []string, or the text form for numeric, uuid, intervals, enums, domains,
// ranges and other types). Apply renders values back to text and casts them
// to the column's type on the server, so any type round-trips, including
// NaN, ±Infinity, -0, infinite timestamps, years before 1 AD, char(n)
// padding and JSON whitespace. Both rely on the server's default output
// styles (DateStyle ISO, IntervalStyle postgres, bytea_output hex), which
// the replication source relies on too.
//
// # Schema changes
//
// Table metadata (columns, types, primary key) is read from the catalog and
// cached per table. A field the target table lacks (schema drift) is
// dropped with one warning per table and field, never an error; such a
// field makes the Applier read the catalog again at most every 30 seconds,
// so a column added on the target is picked up. A statement failing because
// a column or table is gone or a type changed (42703, 42P01, 42804, a
// cached plan whose result changed, a value Lookup cannot decode) makes it
// read the catalog again and retry once.
//
// # Write methods and performance
//
// A batch is grouped into runs of consecutive writes of one shape (table,
// operation, fields) with no key twice, keeping the order of the batch;
// Config.Method chooses how runs are sent. The default, [MethodUnnest],
// sends one INSERT ... SELECT FROM unnest(...), UPDATE ... FROM
// unnest(...) or DELETE ... USING unnest(...) per run, each reporting the
// rows whose expectation failed, all pipelined in one round trip. When a
// bulk statement fails with a permanent error, the batch is replayed write
// by write in a new transaction to name the failing write in a
// *duplex.BatchError (or to succeed, when only the bulk order failed).
//
// Unnest is the default because it leaves the least work around the
// server's own per-row work (the heap and index insertions of the row and
// of its ledger entry, the same for every method): one statement to parse,
// plan and execute per run instead of one per row, a fixed SQL text that
// stays prepared (VALUES changes with the row count and is planned again
// and again), and no extra round trips (COPY cannot be pipelined).
// BENCHMARKS.md has the measurements (TestMethodThroughput,
// BenchmarkApply).
//
// The ledger entries are one plain INSERT of the batch's IDs: they are new
// (the Pipeline asked the ledger before), and a plain insert costs less
// than one with ON CONFLICT DO NOTHING (a speculative insertion per row).
// When an ID is in the ledger already (a batch sent again after it
// committed, or applied concurrently), the insert fails with a unique
// violation and the batch is sent again, rolled back first, with ON
// CONFLICT DO NOTHING. A BRIN index on applied_at (instead of a B-tree)
// keeps the ledger's pruning cheap to maintain.
//
// # Triggers
//
// The Applier's sessions run with session_replication_role = replica, as
// PostgreSQL's own logical replication applies: triggers marked ENABLE
// ALWAYS or ENABLE REPLICA fire on the rows it writes, ordinary (ENABLE
// ORIGIN) ones do not. A "touch" trigger (NEW.updated_at :=
// clock_timestamp()) would otherwise overwrite every synced updated_at with
// the apply time, which the sync never sends back, so the sides differ for
// good; an audit trigger would log each change once per side. Triggers the
// user wants fired on applied rows are listed in TriggerConfig.Fire (New
// marks them ENABLE ALWAYS); TriggerConfig.All applies with every trigger.
//
// Replica mode also turns off the foreign-key triggers: applied rows are
// not checked against foreign keys and ON DELETE CASCADE / SET NULL do not
// run for applied deletes. That is what lets a transaction's rows be
// applied in any order, and it is sound when the source checked the same
// constraints: the rows a cascade deleted on the source are changes of
// their own, captured and applied after the parent's delete. What it does
// not catch: a child inserted on one side while the other deletes its
// parent leaves the child on both sides without its parent (check/checkpg
// reports foreign keys among synced tables, and to tables not synced,
// whose parents may be absent on the other side).
//
// Setting session_replication_role needs a superuser, or on PostgreSQL 15
// and later GRANT SET ON PARAMETER session_replication_role TO role
// ([ReplicaRoleFix]). Without it New logs a warning with that SQL and
// applies in origin mode: every trigger fires and foreign keys are checked
// on apply ([Applier.ReplicaRole] says which).
//
// # Permissions
//
// The role needs to create the state schema's tables (or have them created
// beforehand), to use replication origins (superuser, or EXECUTE on the
// pg_replication_origin_* functions) and to terminate its own backends
// (allowed for any role). Applying without user triggers (see Triggers)
// needs the right to set session_replication_role.
package applypg
