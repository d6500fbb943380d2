// Package pgstate creates and names the tables a sync keeps in its own
// schema of a PostgreSQL database (never in users' tables): checkpoints of
// source positions and the ledger of applied change IDs. The PostgreSQL
// applier writes both in its apply transactions; the PostgreSQL deduper
// reads and writes the ledger.
package pgstate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultSchema is the schema a sync keeps its state in unless told otherwise.
const DefaultSchema = "duplex"

// Execer runs SQL; *pgx.Conn, *pgxpool.Pool and pgx.Tx satisfy it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Ensure creates the state tables in schema when missing. Concurrent
// callers are fine: it takes a transaction-level advisory lock.
func Ensure(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, schema string) error {
	if schema == "" {
		schema = DefaultSchema // one lock name per schema, however it was named
	}
	if err := EnsureDDL(ctx, db, schema, DDL(schema)); err != nil {
		return fmt.Errorf("pgstate: create state tables in schema %s: %w", schema, err)
	}
	return nil
}

// EnsureDDL runs stmts (idempotent DDL for schema) in one transaction
// under the advisory lock Ensure takes, so that duplex's stores never race
// each other to create the schema. IF NOT EXISTS still fails with a unique
// violation when someone not holding the lock creates the same object
// concurrently; the object exists once they commit, so that is retried.
func EnsureDDL(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, schema string, stmts []string) error {
	if schema == "" {
		schema = DefaultSchema
	}
	ensure := func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('duplex state ' || $1))", schema); err != nil {
			return err
		}
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	for range 3 {
		var pe *pgconn.PgError
		if err = pgx.BeginFunc(ctx, db, ensure); !errors.As(err, &pe) || pe.Code != "23505" {
			break
		}
	}
	return err
}

// Tables names the state tables of one schema, quoted for SQL.
type Tables struct {
	Schema      string // quoted schema
	Checkpoints string // quoted "<schema>.checkpoints"
	Applied     string // quoted "<schema>.applied"
	Marker      string // quoted "<schema>.tx_marker"
}

// MarkerTable is the unquoted name of the marker table in schema.
func MarkerTable(schema string) (string, string) {
	if schema == "" {
		schema = DefaultSchema
	}
	return schema, "tx_marker"
}

// Names returns the quoted names of the state tables in schema.
func Names(schema string) Tables {
	if schema == "" {
		schema = DefaultSchema
	}
	return Tables{
		Schema:      pgx.Identifier{schema}.Sanitize(),
		Checkpoints: pgx.Identifier{schema, "checkpoints"}.Sanitize(),
		Applied:     pgx.Identifier{schema, "applied"}.Sanitize(),
		Marker:      pgx.Identifier{schema, "tx_marker"}.Sanitize(),
	}
}

// DDL returns the statements that create the state tables (idempotent).
//
//   - checkpoints(sync, target, source, position, updated_at): the last
//     position of source whose changes are settled on target, written in
//     the apply transaction.
//   - applied(sync, target, change_id, applied_at): the IDs of changes whose
//     writes (or settlement) committed on target; the ledger that makes
//     applies exactly-once in effect. Old rows can be pruned by applied_at
//     (a BRIN index).
//   - tx_marker(id, sync, target): always empty; see the loop guard's marker
//     fallback.
func DDL(schema string) []string {
	n := Names(schema)
	return []string{
		"CREATE SCHEMA IF NOT EXISTS " + n.Schema,
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
			sync text NOT NULL,
			target text NOT NULL,
			source text NOT NULL,
			position text NOT NULL,
			updated_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (sync, target, source))`, n.Checkpoints),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
			sync text COLLATE "C" NOT NULL,
			target text COLLATE "C" NOT NULL,
			change_id text COLLATE "C" NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (sync, target, change_id))`, n.Applied),
		// Pruning finds old rows by applied_at, which grows with the heap:
		// a BRIN index serves it at a fraction of a B-tree's cost per
		// insert. It replaces the B-tree applied_at_idx of earlier versions.
		CollateC(n.Applied, "sync", "target", "change_id"),
		fmt.Sprintf(`CREATE INDEX IF NOT EXISTS applied_at_brin ON %s USING brin (applied_at)`, n.Applied),
		fmt.Sprintf(`DROP INDEX IF EXISTS %s.applied_at_idx`, n.Schema),
		// The marker fallback of the loop guard, for roles that may not use
		// replication origins: an applier inserts (and deletes) a row here
		// first in each of its transactions; the source drops a transaction
		// that starts with one for its sync. The table stays empty.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
			id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			sync text NOT NULL,
			target text NOT NULL)`, n.Marker),
		fmt.Sprintf(`ALTER TABLE %s REPLICA IDENTITY FULL`, n.Marker),
	}
}

// CollateC returns the idempotent statement that gives the text columns
// cols of table (quoted) the "C" collation, where they lack it: the key
// columns of duplex's own tables compare bytes, not the database's
// locale, so their index probes cost a memcmp per column (tables created
// by earlier versions are changed once; their indexes are rebuilt).
func CollateC(table string, cols ...string) string {
	lit := "'" + strings.ReplaceAll(table, "'", "''") + "'"
	var alter, names strings.Builder
	for i, c := range cols {
		if i > 0 {
			alter.WriteString(", ")
			names.WriteString(", ")
		}
		alter.WriteString("ALTER COLUMN " + pgx.Identifier{c}.Sanitize() + ` TYPE text COLLATE "C"`)
		names.WriteString("'" + strings.ReplaceAll(c, "'", "''") + "'")
	}
	return `DO $duplex$ BEGIN
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation
		WHERE a.attrelid = ` + lit + `::regclass AND a.attname IN (` + names.String() + `) AND c.collname <> 'C') THEN
		EXECUTE ` + "'" + strings.ReplaceAll("ALTER TABLE "+table+" "+alter.String(), "'", "''") + "'" + `;
	END IF;
END $duplex$`
}

// FillFactor returns the idempotent statement that sets table's (quoted)
// fillfactor to ff where it is not set so: pages written from then on keep
// room for updates in place (tables created by earlier versions take it
// as their pages are rewritten). A role that does not own the table (one
// a migration role created) leaves it as it is, with a notice: the
// setting is worth speed only.
func FillFactor(table, ff string) string {
	lit := "'" + strings.ReplaceAll(table, "'", "''") + "'"
	opt := "fillfactor=" + ff
	return `DO $duplex$ BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid = ` + lit + `::regclass AND '` + opt + `' = ANY(reloptions)) THEN
		EXECUTE ` + "'" + strings.ReplaceAll("ALTER TABLE "+table+" SET ("+opt+")", "'", "''") + "'" + `;
	END IF;
EXCEPTION WHEN insufficient_privilege THEN
	RAISE NOTICE 'duplex: cannot set ` + strings.ReplaceAll(strings.ReplaceAll(opt, "'", "''"), "%", "%%") + ` on %: not its owner', ` + lit + `;
END $duplex$`
}
