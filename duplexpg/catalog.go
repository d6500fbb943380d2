package duplexpg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
)

// tableInfo is what the catalog says about one listed table.
type tableInfo struct {
	key      []string          // primary key columns in key order
	types    map[string]string // column -> type (format_type)
	identity string            // pg_class.relreplident: d, n, i or f
}

// columns returns the table's column names, sorted.
func (t tableInfo) columns() []string {
	out := make([]string, 0, len(t.types))
	for c := range t.types {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// inspectTables reads the listed tables' primary keys and columns on one
// side (side labels it in errors). Every table that is missing or has no
// primary key is reported, named, in one joined error.
func inspectTables(ctx context.Context, pool *pgxpool.Pool, side string, tables []duplex.Table) (map[duplex.Table]tableInfo, error) {
	out := make(map[duplex.Table]tableInfo, len(tables))
	var errs []error
	for _, t := range tables {
		var oid uint32
		var identity string
		err := pool.QueryRow(ctx, `
			SELECT c.oid, c.relreplident::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, t.Schema, t.Name).Scan(&oid, &identity)
		if errors.Is(err, pgx.ErrNoRows) {
			errs = append(errs, fmt.Errorf("%s: table %s does not exist", side, t))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: read the catalog entry of table %s: %w", side, t, err)
		}
		rows, err := pool.Query(ctx, `
			SELECT a.attname FROM pg_catalog.pg_index i
			JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
			JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord`, oid)
		if err != nil {
			return nil, fmt.Errorf("%s: read the primary key of table %s: %w", side, t, err)
		}
		key, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("%s: read the primary key of table %s: %w", side, t, err)
		}
		if len(key) == 0 {
			errs = append(errs, fmt.Errorf("%s: table %s has no primary key: duplex matches rows by primary key; add one (ALTER TABLE %s ADD PRIMARY KEY (...))",
				side, t, pgx.Identifier{t.Schema, t.Name}.Sanitize()))
			continue
		}
		rows, err = pool.Query(ctx, `
			SELECT attname, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
			WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
		if err != nil {
			return nil, fmt.Errorf("%s: read the columns of table %s: %w", side, t, err)
		}
		info := tableInfo{key: key, types: map[string]string{}, identity: identity}
		var name, typ string
		if _, err := pgx.ForEachRow(rows, []any{&name, &typ}, func() error {
			info.types[name] = typ
			return nil
		}); err != nil {
			return nil, fmt.Errorf("%s: read the columns of table %s: %w", side, t, err)
		}
		out[t] = info
	}
	return out, errors.Join(errs...)
}

// checkReplicaIdentity is the check for Config.KeepReplicaIdentity:
// logical replication needs before images of whole rows (REPLICA IDENTITY
// FULL) to tell which fields each side changed, and the sync may not set
// it. option names that setting in the message.
func checkReplicaIdentity(side, option string, tables []duplex.Table, infos map[duplex.Table]tableInfo) error {
	var errs []error
	for _, t := range tables {
		if info, ok := infos[t]; ok && info.identity != "f" {
			errs = append(errs, fmt.Errorf("%s: table %s is not REPLICA IDENTITY FULL, which -cdc logical needs to detect conflicts per field: run ALTER TABLE %s REPLICA IDENTITY FULL, or drop %s to let the sync set it",
				side, t, pgx.Identifier{t.Schema, t.Name}.Sanitize(), option))
		}
	}
	return errors.Join(errs...)
}

// compareKeys checks that both sides (labelled la and lb) match rows by
// the same key columns.
func compareKeys(tables []duplex.Table, la, lb string, a, b map[duplex.Table]tableInfo) error {
	var errs []error
	for _, t := range tables {
		if !slices.Equal(a[t].key, b[t].key) {
			errs = append(errs, fmt.Errorf("table %s has primary key (%s) on %s but (%s) on %s: both sides must match rows by the same key",
				t, strings.Join(a[t].key, ", "), la, strings.Join(b[t].key, ", "), lb))
		}
	}
	return errors.Join(errs...)
}

// checkWALLevel fails unless the database can do logical replication;
// option names the choice of capture in the message.
func checkWALLevel(ctx context.Context, pool *pgxpool.Pool, side, option string) error {
	var level string
	if err := pool.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("%s: read wal_level: %w", side, err)
	}
	if level != "logical" {
		return fmt.Errorf("%s: wal_level is %q but %s logical needs \"logical\": run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL (or use %s poll)", side, level, option, option)
	}
	return nil
}

// differentDatabases refuses two endpoints on the same database (a sync
// with itself). Where the server's identity cannot be read (a role without
// the right), it does not refuse.
func differentDatabases(ctx context.Context, a, b *Endpoint) error {
	const q = `SELECT (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) || '/' || d.oid::text
		FROM pg_catalog.pg_database d WHERE d.datname = current_database()`
	var ida, idb string
	if a.pool.QueryRow(ctx, q).Scan(&ida) != nil || b.pool.QueryRow(ctx, q).Scan(&idb) != nil {
		return nil
	}
	if ida == idb {
		return fmt.Errorf("%s and %s connect to the same database: a sync needs two different databases", a.cfg.Label, b.cfg.Label)
	}
	return nil
}
