package duplexpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/internal/pgutil"
)

// EndpointConfig names one PostgreSQL database of a sync.
type EndpointConfig struct {
	// Sync names the sync. It names the replication slots, publications,
	// replication origins, the state rows and the single-instance lock, so
	// a restart with the same name resumes where the last run stopped.
	// Letters, digits and _. Required, and the same on both endpoints.
	Sync string
	// System names this database in the sync ("a", "crm"): it labels
	// directions, logs and metrics. Required, and different from the other
	// endpoint's.
	System string
	// ConnString connects to the database (URL or key=value form); the
	// change source also opens replication connections with it. Required.
	ConnString string
	// Label names this database in error messages ("-a" for a flag, a
	// configuration key). "": System.
	Label string
	// ApplicationName is the application_name of the endpoint's sessions.
	// "": "duplex:<Sync>:<System>".
	ApplicationName string
	// Logger receives logs. nil: slog.Default().
	Logger *slog.Logger
}

// Endpoint is one PostgreSQL database of a sync, opened by Open. NewSync or
// NewPipeline builds its parts (change source, applier with its durable
// agreement records, the sync's lock) once both endpoints are checked
// against each other; Close releases them with the connections. It
// implements duplex.Named.
type Endpoint struct {
	cfg      EndpointConfig
	pool     *pgxpool.Pool
	database string
	log      *slog.Logger

	// Read by NewSync or NewPipeline.
	tables      map[duplex.Table]tableInfo
	commitTimes bool // the server records commit timestamps

	// Built by NewSync or NewPipeline.
	built    bool
	lock     *syncLock
	app      *applypg.Applier
	endpoint duplex.Endpoint // Source, Applier (app or a wrapper), LoopGuard, Deduper
	close    func()          // releases the source
	slot     string          // the replication slot (logical capture)
	retained func(context.Context) (int64, error)
}

var _ duplex.Named = (*Endpoint)(nil)

// Open checks cfg and connects to the database. It creates nothing and
// takes no lock: NewSync and NewPipeline do, after checking both databases.
func Open(ctx context.Context, cfg EndpointConfig) (*Endpoint, error) {
	var errs []error
	if cfg.Sync == "" {
		errs = append(errs, &duplex.ConfigError{Field: "duplexpg: EndpointConfig.Sync", Reason: "is required"})
	} else if !pgutil.UsableName(cfg.Sync) {
		errs = append(errs, &duplex.ConfigError{Field: "duplexpg: EndpointConfig.Sync", Reason: fmt.Sprintf("%q is not usable: use letters, digits and _", cfg.Sync)})
	}
	if cfg.System == "" {
		errs = append(errs, &duplex.ConfigError{Field: "duplexpg: EndpointConfig.System", Reason: "is required"})
	}
	if cfg.ConnString == "" {
		errs = append(errs, &duplex.ConfigError{Field: "duplexpg: EndpointConfig.ConnString", Reason: "is required"})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Label == "" {
		cfg.Label = cfg.System
	}
	if cfg.ApplicationName == "" {
		cfg.ApplicationName = "duplex:" + cfg.Sync + ":" + cfg.System
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pcfg, err := pgxpool.ParseConfig(cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid connection string %s: %w", cfg.Label, pgutil.RedactDSN(cfg.ConnString), err)
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = cfg.ApplicationName
	pcfg.MaxConns = max(pcfg.MaxConns, 8)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("%s: connect to %s: %w", cfg.Label, pgutil.RedactDSN(cfg.ConnString), err)
	}
	e := &Endpoint{cfg: cfg, pool: pool, log: cfg.Logger}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.QueryRow(pctx, "SELECT current_database()").Scan(&e.database); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: cannot connect to %s: %w", cfg.Label, pgutil.RedactDSN(cfg.ConnString), err)
	}
	return e, nil
}

// SyncName returns EndpointConfig.Sync.
func (e *Endpoint) SyncName() string { return e.cfg.Sync }

// SystemName returns EndpointConfig.System.
func (e *Endpoint) SystemName() string { return e.cfg.System }

// Pool returns the endpoint's connection pool, closed by Close.
func (e *Endpoint) Pool() *pgxpool.Pool { return e.pool }

// Database returns the name of the database the endpoint connects to.
func (e *Endpoint) Database() string { return e.database }

// Close releases what the endpoint holds: the sync's lock, the change
// source and the connections. Call it after Run returned. It is safe to
// call more than once.
func (e *Endpoint) Close() error {
	var err error
	if e.close != nil {
		e.close()
		e.close = nil
	}
	if e.lock != nil {
		err = e.lock.unlock()
		e.lock = nil
	}
	if e.pool != nil {
		e.pool.Close()
		e.pool = nil
	}
	return err
}
