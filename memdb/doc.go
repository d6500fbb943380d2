// Package memdb is an in-memory database for tests, demos and users' unit
// tests: tables with primary keys, a change log with before images that a
// [Source] streams as a [duplex.ChangeSource], and an [Applier] that writes
// into it as a [duplex.Applier] (with transactional checkpoints, like a
// PostgreSQL target). It behaves like a database with logical replication
// and REPLICA IDENTITY FULL, without any server.
package memdb
