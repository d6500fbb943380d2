// Package checkpg is the PostgreSQL duplex.Preflight: before a two-way
// sync starts (and on demand, pgbisync -check), it reads both databases'
// catalogs and reports, table by table and side by side, the traps that
// are not in the change stream but in the schemas around it.
//
// # Findings
//
// Every finding is a blocker (the sync must not start), a warning or fine,
// with why and the SQL or option that fixes it:
//
//   - table, key: the table and its primary key exist on both sides and
//     match rows by the same columns (blocker otherwise).
//   - columns, checks, unique: columns (type, nullability, default), check
//     and unique constraints that differ; unique constraints other than the
//     key always warn: the same value inserted on both sides under
//     different keys lands in the dead-letter queue with both rows.
//   - foreign_keys: to synced tables, to tables not synced, and from
//     tables not synced; what the apply mode (see apply/applypg, "Triggers")
//     means for each, and which must be DEFERRABLE when foreign keys are
//     checked on apply.
//   - triggers: which user triggers fire on applied rows.
//   - sequences: key columns fed by a sequence (serial, identity, nextval
//     default) on both sides hand out the same numbers: a blocker, unless
//     the sequences are interleaved or have disjoint ranges, or
//     Config.Sequences arranges them (at start, when Check is called with
//     Fix; each sequence's comment records what was done).
//   - replica_identity: whole before images for per-field conflicts.
//   - rows, sample: row counts and a quick comparison of sampled rows.
//   - privileges: whether the role may apply in replica mode.
package checkpg
