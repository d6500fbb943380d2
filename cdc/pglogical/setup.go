package pglogical

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// SlotName returns the replication slot (and publication) name of a sync's
// system: "duplex_<sync>__<system>", lower-case. Slot names are unique per
// cluster, so two databases of one cluster in one sync, and two syncs on one
// database, never collide. Names longer than 63 bytes are shortened with a
// hash of the full name, keeping them distinct.
func SlotName(sync, system string) string {
	return pgutil.ObjectName("duplex_", sync, system)
}

// OriginName returns the replication origin prefix of a sync's appliers:
// "duplex:<sync>". Transactions made under it, or under a name starting
// with it and ":", are the sync's own writes and are dropped by the source.
// (Origin names are text, not identifiers: the ":" keeps sync "a" from
// matching sync "a_b".)
func OriginName(sync string) string {
	return "duplex:" + pgutil.Sanitize(sync)
}

// quoteTable quotes a schema-qualified table name for SQL.
func quoteTable(t duplex.Table) string {
	return pgx.Identifier{t.Schema, t.Name}.Sanitize()
}

// tableInfo is what setup learned about a table from the catalog.
type tableInfo struct {
	table    duplex.Table
	oid      uint32
	identity byte
	key      []string
}

// inspect reads a table's catalog entry: it must exist and have a primary key.
func inspect(ctx context.Context, pool *pgxpool.Pool, t duplex.Table) (tableInfo, error) {
	info := tableInfo{table: t}
	var ident string
	err := pool.QueryRow(ctx, `
		SELECT c.oid, c.relreplident::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, t.Schema, t.Name).Scan(&info.oid, &ident)
	if errors.Is(err, pgx.ErrNoRows) {
		return info, duplex.Permanent(fmt.Errorf("pglogical: table %s does not exist", t))
	}
	if err != nil {
		return info, fmt.Errorf("pglogical: inspect table %s: %w", t, err)
	}
	if ident != "" {
		info.identity = ident[0]
	}
	info.key, err = primaryKey(ctx, pool, info.oid)
	if err != nil {
		return info, fmt.Errorf("pglogical: primary key of %s: %w", t, err)
	}
	if len(info.key) == 0 {
		return info, duplex.Permanent(fmt.Errorf("pglogical: table %s has no primary key; duplex matches rows by primary key, add one (ALTER TABLE %s ADD PRIMARY KEY (...))", t, quoteTable(t)))
	}
	return info, nil
}

func primaryKey(ctx context.Context, pool *pgxpool.Pool, oid uint32) ([]string, error) {
	rows, err := pool.Query(ctx, `
		SELECT a.attname
		FROM pg_index i
		JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND i.indisprimary
		ORDER BY k.ord`, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// setup checks the database and creates the publication and slot. It
// returns the tables' key columns. resuming says the sync has a stored
// position: a missing slot is then an error, never silently re-created.
func (s *Source) setup(ctx context.Context, resuming bool) error {
	pool := s.pool
	var level string
	if err := pool.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("pglogical: %s: read wal_level: %w", s.cfg.System, err)
	}
	if level != "logical" {
		return duplex.Permanent(fmt.Errorf("pglogical: %s: wal_level is %q but logical replication needs \"logical\": run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL (scripts/services.sh does this)", s.cfg.System, level))
	}
	var errs []error
	for _, t := range s.cfg.Tables {
		info, err := inspect(ctx, pool, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if info.identity != 'f' {
			if !s.cfg.SetReplicaIdentity {
				errs = append(errs, duplex.Permanent(fmt.Errorf(
					"pglogical: table %s has REPLICA IDENTITY %s: duplex needs before images (REPLICA IDENTITY FULL) to tell which fields the source changed and detect conflicts per field; run ALTER TABLE %s REPLICA IDENTITY FULL or allow the source to (Config.SetReplicaIdentity)",
					t, identityName(info.identity), quoteTable(t))))
				continue
			}
			if _, err := pool.Exec(ctx, "ALTER TABLE "+quoteTable(t)+" REPLICA IDENTITY FULL"); err != nil {
				errs = append(errs, fmt.Errorf("pglogical: set REPLICA IDENTITY FULL on %s: %w", t, err))
				continue
			}
			s.log.InfoContext(ctx, "set replica identity full", "table", t.String())
		}
		s.keys[t] = info.key
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if s.cfg.Marker {
		if err := pgstate.Ensure(ctx, pool, s.cfg.StateSchema); err != nil {
			return err
		}
		sc, name := pgstate.MarkerTable(s.cfg.StateSchema)
		s.keys[duplex.Table{Schema: sc, Name: name}] = []string{"id"}
	}
	if err := s.ensurePublication(ctx); err != nil {
		return err
	}
	return s.ensureSlot(ctx, resuming)
}

func identityName(b byte) string {
	switch b {
	case 'd':
		return "DEFAULT"
	case 'n':
		return "NOTHING"
	case 'i':
		return "USING INDEX"
	case 'f':
		return "FULL"
	}
	return string(b)
}

func (s *Source) ensurePublication(ctx context.Context) error {
	want := make([]string, len(s.cfg.Tables))
	for i, t := range s.cfg.Tables {
		want[i] = quoteTable(t)
	}
	if s.cfg.Marker {
		sc, name := pgstate.MarkerTable(s.cfg.StateSchema)
		want = append(want, quoteTable(duplex.Table{Schema: sc, Name: name}))
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", s.slot).Scan(&exists); err != nil {
		return fmt.Errorf("pglogical: read publication %s: %w", s.slot, err)
	}
	pub := pgx.Identifier{s.slot}.Sanitize()
	if !exists {
		if _, err := s.pool.Exec(ctx, "CREATE PUBLICATION "+pub+" FOR TABLE "+strings.Join(want, ", ")); err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42710" { // created concurrently: fine
				return fmt.Errorf("pglogical: create publication %s: %w", s.slot, err)
			}
		}
		s.log.InfoContext(ctx, "created publication", "publication", s.slot)
		return nil
	}
	rows, err := s.pool.Query(ctx, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1", s.slot)
	if err != nil {
		return fmt.Errorf("pglogical: read publication %s: %w", s.slot, err)
	}
	var have []string
	for rows.Next() {
		var sc, tn string
		if err := rows.Scan(&sc, &tn); err != nil {
			rows.Close()
			return err
		}
		have = append(have, quoteTable(duplex.Table{Schema: sc, Name: tn}))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	slices.Sort(have)
	sorted := slices.Clone(want)
	slices.Sort(sorted)
	if !slices.Equal(have, sorted) {
		if _, err := s.pool.Exec(ctx, "ALTER PUBLICATION "+pub+" SET TABLE "+strings.Join(want, ", ")); err != nil {
			return fmt.Errorf("pglogical: update publication %s: %w", s.slot, err)
		}
		s.log.InfoContext(ctx, "updated publication tables", "publication", s.slot, "tables", strings.Join(want, ","))
	}
	return nil
}

func (s *Source) ensureSlot(ctx context.Context, resuming bool) error {
	var db, plugin string
	var status *string
	err := s.pool.QueryRow(ctx, `
		SELECT coalesce(database, ''), coalesce(plugin, ''), wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, s.slot).Scan(&db, &plugin, &status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if resuming {
			return duplex.Permanent(fmt.Errorf("pglogical: replication slot %s does not exist, but the sync has a stored position: the slot was dropped and changes made since may be lost; re-seed the target (reconcile both sides) and reset the sync's checkpoint before starting again", s.slot))
		}
		exists, err := s.createSlotExporting(ctx)
		if err != nil {
			return err
		}
		if !exists {
			s.log.InfoContext(ctx, "created replication slot", "slot", s.slot, "snapshot_exported", true)
		}
		return nil
	case err != nil:
		return fmt.Errorf("pglogical: read replication slot %s: %w", s.slot, err)
	}
	var current string
	if err := s.pool.QueryRow(ctx, "SELECT current_database()").Scan(&current); err != nil {
		return err
	}
	if db != current || plugin != "pgoutput" {
		return duplex.Permanent(fmt.Errorf("pglogical: replication slot %s belongs to database %q with plugin %q, not %q with pgoutput: choose another sync name", s.slot, db, plugin, current))
	}
	if status != nil && *status == "lost" {
		return duplex.Permanent(fmt.Errorf("pglogical: replication slot %s was invalidated (wal_status lost: the WAL it needed was removed, see max_slot_wal_keep_size); changes were lost: re-seed the target and recreate the slot", s.slot))
	}
	return nil
}
