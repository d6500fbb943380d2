// Package pgpoll is a [github.com/duplexsync/duplex.ChangeSource] that polls
// PostgreSQL tables by a timestamp column (updated_at), for databases where
// logical replication is not available. It never drops a committed row, and
// it can see deletes.
//
// # How rows are found
//
// Each poll (a "pass") reads every table in bounded pages with keyset
// pagination on (timestamp column, primary key), so rows sharing a
// timestamp are never skipped at a page boundary. A pass starts at the
// table's watermark, not at the last row seen: the watermark is capped by
// the oldest transaction that may still commit rows with an earlier
// timestamp, so a row written by a long transaction (begin; update ... set
// updated_at = now(); ...; commit minutes later) is found when it commits,
// although rows with later timestamps were delivered long before. The cap
// at the start of each pass is the smallest of:
//
//   - the server's clock_timestamp(), minus Config.Overlap;
//   - the xact_start of every other open transaction of the database
//     (pg_stat_activity, read before the rows, so a transaction that
//     commits after the rows are read was still listed);
//   - when some sessions' pg_stat_activity rows are hidden from the role
//     (it is neither their owner, a superuser nor a member of
//     pg_read_all_stats), the xid approach: the oldest transaction that
//     may still commit is the oldest in flight
//     (pg_snapshot_xmin(pg_current_snapshot())), or the next to get an
//     id; the source remembers each pass's time and pg_snapshot_xmax, and
//     caps the watermark at the pass before the last one that ran before
//     that transaction got its id, and at least 100 ms before that one
//     (a margin for a timestamp taken just before the first write, in a
//     BEFORE trigger say, by a writer the scheduler may pause). That
//     covers transactions whose timestamps are taken at about their first
//     write; grant pg_read_all_stats to cover those that take now() long
//     before writing. Until the source has seen two passes it does not
//     advance the watermark.
//
// The rows between the watermark and the end of the table are read again
// at every pass, and skipped when their content is the one last emitted:
// re-reads never become duplicate changes. The guarantee assumes that a
// row's timestamp is never earlier than the start of the transaction that
// writes it (true for now(), clock_timestamp() and triggers that set
// them); an application clock behind the database's needs Config.Overlap.
// Rows whose timestamp is NULL are not captured until it is set.
//
// # Timestamp without time zone
//
// The column may be timestamptz (recommended) or timestamp without time
// zone. A timestamp column set by now() (a default, a trigger) holds the
// wall-clock time of the writing session's TimeZone, so the source reads
// it in that zone: Config.ColumnTimeZone, by default the TimeZone a new
// session of Config.ConnString gets (the database's, the role's or the
// server's setting: what SHOW timezone says without the override of the
// source's own sessions, which are in UTC). The safe point of each pass (the
// clock, open transactions, the xid fallback, Config.Overlap: all instants)
// becomes a wall-clock time of that zone, which the column's values are
// compared with; CommitTime is the instant a value stands for. The source
// logs the zone it uses, and warns about the column type: the values are
// right only if every writer's session is in that zone, and they are
// ambiguous in the hour when clocks go back (01:30 comes twice in New York
// on the first Sunday of November), where CommitTime may be an hour off
// and the watermark is held back by the step (a pass reads that hour
// again; the rows it already emitted are skipped). The stored watermark
// of such a column is the safe point's instant (or a row's own value), so
// a corrected zone applies to it at the next start.
//
// # Last-emitted state, before images and IDs
//
// The source keeps, in the sync's own schema of the polled database
// (duplex.poll_rows), the image of each row it last emitted (every column
// in PostgreSQL's text form, so values decode to the same Go types as the
// logical replication source's). An update carries Before = that image,
// which gives the Pipeline the "what did this side change" that a before
// image gives with logical replication; a row never seen is an OpInsert.
// Polling coalesces: the versions of a row written between two passes
// arrive as one change.
//
// A change's ID is derived from sync, system, table, key, op and hashes of
// the before and after images (the after image includes the timestamp
// column, which changes at every write), so a re-delivery after a crash
// or restart carries the same ID and the Pipeline's dedup recognises it.
// CommitTime is the row's timestamp column (for timestamp without time
// zone, the instant it stands for in the writers' zone): the application's
// clock (or the database's, when a default or trigger sets it), not a
// commit timestamp. For deletes it is the time the delete was detected.
// Origin is always empty.
//
// # Positions and acknowledgements
//
// A Position is a sequence number of the emitted changes with a running
// hash of their IDs. The watermarks, the emitted images and the position
// are stored (duplex.poll_watermark, duplex.poll_rows, duplex.poll_position)
// only by Ack, in one transaction, for the changes the acknowledged
// position covers: a crash before Ack re-emits the same changes with the
// same IDs. Stream(from) with a from later than the stored position (the
// target's checkpoint is ahead of the last Ack) replays silently up to
// from; when the replay is the same sequence of changes (the running hash
// matches) it continues after from, otherwise it delivers the replayed
// changes again under positions after from, and the Pipeline's dedup drops
// those it already settled.
//
// # Deletes
//
// Polling cannot see a deleted row. Config.DeleteDetection chooses:
//
//   - DeletesNone: deletes are not captured.
//   - DeletesTombstones (opt-in): Setup installs an AFTER DELETE trigger on
//     each table that records the deleted key in duplex.poll_tombstones
//     (the sync's own schema; the user's table gets a trigger, never a
//     column). Each pass turns the tombstones of keys last emitted as live
//     and now absent into OpDelete changes; Ack removes the tombstones it
//     covers. TRUNCATE fires no row trigger and is not seen.
//   - DeletesKeyDiff: every Config.KeyDiffEvery, the keys of
//     duplex.poll_rows (and of changes emitted but not yet acknowledged) are
//     compared with the table's; the keys gone become OpDelete changes.
//
// A delete carries Before = the image last emitted for the key.
//
// # Limits
//
//   - One Stream at a time per Source (and per sync and system).
//   - Ack writes one transaction (the images of the changes it covers, the
//     watermarks, the position); acknowledge per batch, not per change.
//   - poll_rows holds one image per synced row; DeletesKeyDiff reads it
//     whole at every comparison.
//   - Columns are read from the catalog when the source starts: restart
//     it after a schema change.
//   - Installing the tombstone trigger needs the table's owner (run Setup
//     once as the owner; later runs as another role find it in place).
//   - An idle-in-transaction session holds the watermark back (rows since
//     are read again at every pass, without being emitted again); the
//     source warns when that lasts over a minute.
//
// # Echoes
//
// The source does not recognise the sync's own writes to this database:
// wrap the applier of this side in loopguard.Remembering, which remembers
// what it wrote and drops the change that polling reads back.
package pgpoll
