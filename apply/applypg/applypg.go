package applypg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/agree/agreepg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// Config configures an Applier.
type Config struct {
	// Sync names the sync. With Target it keys the checkpoints and the
	// ledger, and it is the prefix of the replication origin. Required.
	Sync string
	// Target names the system this database is in the sync ("b", "crm").
	// Required.
	Target string
	// Schema is the sync's own schema, holding the checkpoints and the
	// ledger; New creates them when missing. "": pgstate.DefaultSchema.
	Schema string
	// Origin is the replication origin the Applier's transactions are made
	// under, so the sync's change capture on this database drops them. It
	// must be, or start with, pglogical.OriginName(Sync) followed by ":".
	// Concurrent applies use variants of it (Origin + "_#c2", ...; see
	// DropOrigins). "": pglogical.OriginName(Sync) + ":" + Target.
	Origin string
	// Method is how a batch's writes are sent. 0: MethodUnnest.
	Method Method
	// Triggers says which of the target's triggers fire on the rows the
	// Applier writes. The zero value applies as PostgreSQL's own logical
	// replication does: the session runs with session_replication_role =
	// replica, so only triggers marked ENABLE ALWAYS or ENABLE REPLICA
	// fire, and foreign keys are not checked (see the package
	// documentation, "Triggers").
	Triggers TriggerConfig
	// Logger receives logs. nil: slog.Default().
	Logger *slog.Logger
}

// Applier writes a sync's decisions into a PostgreSQL database. It
// implements duplex.Applier, duplex.Checkpointer, duplex.Ledger,
// duplex.Truncater and duplex.AgreementKeeper (the agreement records of a
// two-way merge, in <schema>.agreements, written in the transaction of the
// writes they describe), and is safe for concurrent use.
type Applier struct {
	cfg        Config
	pool       *pgxpool.Pool
	log        *slog.Logger
	state      pgstate.Tables
	agreements *agreepg.Records
	commitTime bool // track_commit_timestamp is on: Lookup reports CommitTimeField
	// replica: the apply sessions run with session_replication_role =
	// replica (the role may set it and Triggers.All is off).
	replica bool
	// driftRefresh is the shortest time between two catalog reads of a
	// table caused by a field its cached metadata lacks.
	driftRefresh time.Duration
	origins      *originPool

	mu      sync.Mutex
	tables  map[duplex.Table]*tableMeta
	drifted sync.Map

	suspectMu sync.Mutex
	suspects  []suspect // backends of broken applies, see settle
}

var (
	_ duplex.Applier         = (*Applier)(nil)
	_ duplex.Checkpointer    = (*Applier)(nil)
	_ duplex.Ledger          = (*Applier)(nil)
	_ duplex.Truncater       = (*Applier)(nil)
	_ duplex.AgreementKeeper = (*Applier)(nil)
	_ duplex.AgreedLookup    = (*Applier)(nil)
)

// New checks cfg, creates the sync's state tables and replication origin
// when missing, and returns an Applier writing through pool. The caller
// keeps ownership of pool. The role needs the right to create the state
// schema's tables and to use replication origins (a superuser, or EXECUTE
// on the pg_replication_origin_* functions).
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Applier, error) {
	var errs []error
	if pool == nil {
		errs = append(errs, &duplex.ConfigError{Field: "pool", Reason: "is nil"})
	}
	if cfg.Sync == "" || pglogical.OriginName(cfg.Sync) == "duplex:" {
		errs = append(errs, &duplex.ConfigError{Field: "Sync", Reason: fmt.Sprintf("%q is not a usable name (letters, digits, _)", cfg.Sync)})
	}
	if cfg.Target == "" {
		errs = append(errs, &duplex.ConfigError{Field: "Target", Reason: "is required"})
	}
	if cfg.Method > MethodCopy {
		errs = append(errs, &duplex.ConfigError{Field: "Method", Reason: fmt.Sprintf("unknown method %d", cfg.Method)})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.Schema == "" {
		cfg.Schema = pgstate.DefaultSchema
	}
	if cfg.Origin == "" {
		cfg.Origin = DefaultOrigin(cfg.Sync, cfg.Target)
	}
	if len(cfg.Origin) > 400 {
		return nil, &duplex.ConfigError{Field: "Origin", Reason: "is longer than 400 bytes"}
	}
	if cfg.Method == 0 {
		cfg.Method = MethodUnnest
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Applier{
		cfg:          cfg,
		pool:         pool,
		log:          cfg.Logger.With("component", "applypg", "sync", cfg.Sync, "target", cfg.Target),
		state:        pgstate.Names(cfg.Schema),
		agreements:   agreepg.NewRecords(cfg.Schema, cfg.Sync, cfg.Target),
		origins:      &originPool{base: cfg.Origin},
		driftRefresh: driftRefresh,
		tables:       make(map[duplex.Table]*tableMeta),
	}
	if err := pgstate.Ensure(ctx, pool, cfg.Schema); err != nil {
		return nil, pgutil.Classify(fmt.Errorf("applypg: %s: %w", cfg.Target, err))
	}
	if err := agreepg.Ensure(ctx, pool, cfg.Schema); err != nil {
		return nil, fmt.Errorf("applypg: %s: %w", cfg.Target, err)
	}
	var track string
	if err := pool.QueryRow(ctx, "SHOW track_commit_timestamp").Scan(&track); err != nil {
		return nil, pgutil.Classify(fmt.Errorf("applypg: %s: read track_commit_timestamp: %w", cfg.Target, err))
	}
	a.commitTime = track == "on"
	// Triggers first: a configuration they refuse leaves no origin behind.
	if err := a.setupTriggers(ctx); err != nil {
		return nil, err
	}
	if err := createOrigin(ctx, pool, cfg.Origin); err != nil {
		return nil, pgutil.Classify(fmt.Errorf("applypg: %s: create replication origin %s: %w", cfg.Target, cfg.Origin, err))
	}
	return a, nil
}

// DefaultOrigin returns the replication origin name an Applier of sync
// writing to target uses by default: pglogical.OriginName(sync) + ":" +
// target, which the sync's logical replication sources drop.
func DefaultOrigin(sync, target string) string {
	return pglogical.OriginName(sync) + ":" + target
}

// Origin returns the replication origin the Applier writes under.
func (a *Applier) Origin() string { return a.cfg.Origin }

// Checkpoint implements duplex.Checkpointer: the position of source
// recorded by the last batch that carried one, or "".
func (a *Applier) Checkpoint(ctx context.Context, source string) (duplex.Position, error) {
	var pos string
	err := a.pool.QueryRow(ctx, "SELECT position FROM "+a.state.Checkpoints+" WHERE sync = $1 AND target = $2 AND source = $3",
		a.cfg.Sync, a.cfg.Target, source).Scan(&pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", pgutil.Classify(fmt.Errorf("applypg: %s: read the checkpoint of %s: %w", a.cfg.Target, source, err))
	}
	return duplex.Position(pos), nil
}

// Applied implements duplex.Ledger: whether the write of each change
// committed (its ID is in the ledger, written in the batch's transaction).
// After an apply whose connection broke with its transaction open (maybe
// during COMMIT), Applied first makes sure that backend is gone, so its
// answer cannot be overtaken by a late commit; it fails (unavailable) until
// it can.
func (a *Applier) Applied(ctx context.Context, ids []string) ([]bool, error) {
	out := make([]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	if err := a.settle(ctx); err != nil {
		return nil, err
	}
	rows, err := a.pool.Query(ctx, ledgerSQL(a.state.Applied), a.cfg.Sync, a.cfg.Target, ids)
	if err != nil {
		return nil, pgutil.Classify(fmt.Errorf("applypg: %s: read the ledger: %w", a.cfg.Target, err))
	}
	found := make(map[string]struct{}, len(ids))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, pgutil.Classify(fmt.Errorf("applypg: %s: read the ledger: %w", a.cfg.Target, err))
		}
		found[id] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return nil, pgutil.Classify(fmt.Errorf("applypg: %s: read the ledger: %w", a.cfg.Target, err))
	}
	for i, id := range ids {
		_, out[i] = found[id]
	}
	return out, nil
}

// ledgerSQL asks which of $3's change IDs the ledger table holds for sync $1
// and target $2, with one primary-key probe per ID whatever the statistics
// say. The plainer "change_id = ANY($3)" lets the planner, on a ledger not
// analyzed yet (new, or grown fast), use the index for sync and target only
// and filter the IDs: a scan of the whole ledger per batch, which made the
// apply slow down as the ledger grew (hundreds of ms per batch at 100,000
// rows, seen in the soak test). The LIMIT keeps the subquery from being
// turned into a hash join.
func ledgerSQL(table string) string {
	return "SELECT i.id FROM unnest($3::text[]) AS i(id), LATERAL (SELECT 1 FROM " + table +
		" a WHERE a.sync = $1 AND a.target = $2 AND a.change_id = i.id LIMIT 1) hit"
}

// Prune deletes the ledger entries of this sync and target older than
// olderThan and returns how many it deleted. Keep them for longer than a
// change can take to be redelivered (the source's retention, outages).
func (a *Applier) Prune(ctx context.Context, olderThan time.Duration) (int64, error) {
	if olderThan < 0 {
		return 0, duplex.Permanent(errors.New("applypg: Prune: negative age"))
	}
	tag, err := a.pool.Exec(ctx, "DELETE FROM "+a.state.Applied+
		" WHERE sync = $1 AND target = $2 AND applied_at < now() - $3::text::interval",
		a.cfg.Sync, a.cfg.Target, strconv.FormatInt(olderThan.Microseconds(), 10)+" microseconds")
	if err != nil {
		return 0, pgutil.Classify(fmt.Errorf("applypg: %s: prune the ledger: %w", a.cfg.Target, err))
	}
	return tag.RowsAffected(), nil
}

// Truncate implements duplex.Truncater: TRUNCATE table, under the
// Applier's replication origin, with c's ID in the ledger in the same
// transaction.
func (a *Applier) Truncate(ctx context.Context, table duplex.Table, c *duplex.Change) error {
	if table.Schema == "" || table.Name == "" {
		return duplex.Permanent(fmt.Errorf("applypg: table %q is not schema-qualified", table.String()))
	}
	return a.withOrigin(ctx, func(s *session) (bool, error) {
		if err := a.setup(ctx, s); err != nil {
			return errors.Is(err, errOriginBusy), err
		}
		b := &pgx.Batch{}
		var q []queued
		s.queueBegin(b, &q)
		b.Queue("TRUNCATE " + pgutil.QuoteTable(table))
		q = append(q, queued{kind: resExec})
		if c != nil && c.ID != "" { // the ledger entry commits with the TRUNCATE
			b.Queue("INSERT INTO "+a.state.Applied+" (sync, target, change_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
				a.cfg.Sync, a.cfg.Target, c.ID)
			q = append(q, queued{kind: resStateOK})
		}
		if err := a.readBatch(ctx, s, s.conn.Conn().SendBatch(ctx, b), q, nil); err != nil {
			var r *replayError
			if errors.As(err, &r) {
				err = r.err
			}
			return false, fmt.Errorf("applypg: truncate %s: %w", table, err)
		}
		return false, a.commit(ctx, s)
	})
}

// DropOrigins drops the Applier's replication origin and the variants
// concurrent applies created, for when the sync is removed. Origins in use
// by another session are left alone (and reported).
func (a *Applier) DropOrigins(ctx context.Context) error {
	return DropOrigins(ctx, a.pool, a.cfg.Origin)
}

// DropOrigins drops the replication origin named origin and its variants
// (origin + "_#..."), as created by Appliers configured with it.
func DropOrigins(ctx context.Context, pool *pgxpool.Pool, origin string) error {
	rows, err := pool.Query(ctx, `SELECT roname FROM pg_catalog.pg_replication_origin
		WHERE roname = $1 OR starts_with(roname, $1 || '_#')`, origin)
	if err != nil {
		return pgutil.Classify(fmt.Errorf("applypg: list replication origins: %w", err))
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return pgutil.Classify(fmt.Errorf("applypg: list replication origins: %w", err))
	}
	var errs []error
	for _, n := range names {
		if _, err := pool.Exec(ctx, "SELECT pg_catalog.pg_replication_origin_drop($1)", n); err != nil && pgutil.SQLState(err) != "42704" {
			errs = append(errs, fmt.Errorf("applypg: drop replication origin %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// Lookup implements duplex.Applier: one round trip per call, reading the rows'
// columns in PostgreSQL's text form and decoding them like the logical
// replication source does (pgvalue), so values read either way compare
// equal. With track_commit_timestamp on, a row also carries its last commit
// time under duplex.CommitTimeField (absent when the server no longer
// knows it).
func (a *Applier) Lookup(ctx context.Context, table duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	rows, _, err := a.lookup(ctx, table, keys, false)
	return rows, err
}

// LookupAgreements implements duplex.AgreedLookup: the rows of keys, as
// Lookup reads them, and their agreement records, in one round trip and
// one snapshot.
func (a *Applier) LookupAgreements(ctx context.Context, table duplex.Table, keys []duplex.Key) ([]duplex.Values, []duplex.Agreement, error) {
	return a.lookup(ctx, table, keys, true)
}

// lookup reads the rows of keys (and, with records, their agreement
// records), reading table's columns again once when the table changed.
func (a *Applier) lookup(ctx context.Context, table duplex.Table, keys []duplex.Key, records bool) ([]duplex.Values, []duplex.Agreement, error) {
	out := make([]duplex.Values, len(keys))
	var recs []duplex.Agreement
	if records {
		recs = make([]duplex.Agreement, len(keys))
	}
	if len(keys) == 0 {
		return out, recs, nil
	}
	m, err := a.meta(ctx, table)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 0; ; attempt++ {
		err = a.read(ctx, m, keys, out, recs)
		if err == nil || attempt > 0 || !isSchemaChange(err) {
			break
		}
		if m, err = a.refreshMeta(ctx, table, m); err != nil {
			return nil, nil, err
		}
		clear(out)
		clear(recs)
	}
	if err != nil {
		return nil, nil, err
	}
	return out, recs, nil
}

// Agreements implements duplex.AgreementKeeper: one statement, an index
// probe per key.
func (a *Applier) Agreements(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Agreement, error) {
	as, err := a.agreements.Load(ctx, a.pool, t, keys)
	if err != nil {
		return nil, fmt.Errorf("applypg: %s: %w", a.cfg.Target, err)
	}
	return as, nil
}
