// Command pgbisync keeps tables of two PostgreSQL databases in agreement in
// both directions, configured by flags:
//
//	go run ./examples/pgbisync \
//	  -a 'postgres://root@127.0.0.1:5432/db_a' -b 'postgres://root@127.0.0.1:5432/db_b' \
//	  -tables public.customers,public.orders \
//	  -authority 'customers.name=a,customers.email=a,customers.payment_status=b' \
//	  -conflict lww -skew 500ms \
//	  -cdc logical \
//	  -redis redis://127.0.0.1:6379/0 \
//	  -admin 127.0.0.1:8089 \
//	  -name demo
//
// The endpoints are called "a" and "b" (directions a_to_b and b_to_a).
// Primary keys come from the catalog. Conflicts on fields the -authority map
// does not cover are decided by -conflict: lww (the later write wins;
// writes closer than -skew go to the dead-letter queue), dlq (every such
// conflict goes to the DLQ), a-wins or b-wins. -redis adds a Redis front
// cache to the PostgreSQL dedup ledger.
//
// -conflict lww compares, table by table, the -lww-column (updated_at) where
// the table has it on both sides, and the rows' commit timestamps where it
// does not; the start-up log says which for each table ("conflict policy"
// ... policy="lww on column updated_at" or "lww on commit timestamps (no
// updated_at column)"). Commit timestamps are known only on servers with
// track_commit_timestamp = on: when a side lacks it, pgbisync warns at
// start-up, naming the tables and the fix (ALTER SYSTEM SET
// track_commit_timestamp = on, then restart PostgreSQL), and those tables'
// conflicts go to the DLQ with that reason rather than being guessed. An
// -lww-column that exists but is not a timestamp is an error naming the
// table and column. The choice is made at start-up: restart pgbisync after
// adding the column to a table.
//
// -name names the sync's replication slots, publications, replication
// origins and state (checkpoints, ledger, DLQ in database A's duplex
// schema): pgbisync creates what is missing on start and leaves it all in
// place on exit, so a restart with the same -name resumes where the last run
// stopped, after a clean stop or a crash, with nothing lost or applied
// twice. A second pgbisync with the same -name refuses to start while the
// first runs: the first holds a session advisory lock derived from the name
// on both databases (checked every -lock-check, taken again after a lost
// session; if another process took it meanwhile, the first stops with
// status 1 rather than run beside it). To remove a sync for good, drop its
// slots (duplex_<name>__a, duplex_<name>__b), its publications of the same
// names, its replication origins (duplex:<name>:*) and its rows in the
// duplex schema; -name is lower-cased in those names.
//
// On the first start of a -name (and after a start stopped while it ran),
// pgbisync onboards before streaming: rows one database lacks are copied
// to it, rows both hold alike are recorded as agreed, rows both hold
// differently are decided by -authority and -conflict (what they leave
// undecided goes to the DLQ with both rows, both databases untouched). It
// commits in chunks of keys with its progress, so a restart goes on where
// it stopped; it logs its progress (rows compared, copied, decided, held,
// rate, ETA), exports duplex_onboarding_* metrics and a /healthz line while
// it runs, and prints one "pgbisync: onboarded <table>: ..." line per table
// when done. -onboarding=false skips it. See the README, "Starting on
// existing data". -reconcile runs the same engine once as a repair pass
// (compare -tables in batched key ranges, repair what differs, print a
// "pgbisync: reconciled <table>: ..." line per table) and exits, without
// streaming; it takes the sync's lock, so the sync must be stopped.
//
// Output: a one-line summary on stdout at start, then the exact line
// "pgbisync: ready" on stdout once both directions are streaming (with
// -cdc logical every change committed from then on is captured; with -cdc
// poll the first pass, which reads every row once, follows); logs go
// to stderr (slog text). Passwords of -a, -b, -redis and the admin password
// never appear in output: messages show connection strings redacted, and
// stdout and stderr are filtered for the literal passwords as well.
//
// -cdc poll reads changed rows by -poll-column (every write must set it)
// instead of replication slots, for databases without logical replication;
// deletes are seen per -poll-deletes. Polling cannot tell the sync's writes
// from users', so each side's applier remembers what it wrote
// (loopguard.Remembering) and that side's source drops it when read back.
// Known limitation: when both sides edit different fields of one row within
// one poll interval, the row the sync writes merges both edits, and the
// polled side's own edit can be taken for the sync's echo and not reach the
// other side. Prefer -cdc logical where it is available.
//
// -admin serves /metrics (Prometheus: duplex_sync_lag_seconds{direction},
// duplex_changes_applied_total{direction,table}, duplex_conflicts_total,
// duplex_dlq_depth and the rest of package metrics; the counters and the
// DLQ depth of every direction and table show from the start, at 0, the lag
// from the first applied change), /healthz (200, or 503
// past a minute of lag), and the DLQ UI at / with its JSON API (GET /dlq,
// GET /dlq/{id}, POST /dlq/{id}/retry|dismiss, POST
// /dlq/{id}/resolve?winner=a|b, POST /dlq/bulk?action=&winner=&dry_run=
// with the list's filters). While a direction waits out an outage of a
// database (it is never a reason to dead-letter), its lag grows and
// /healthz names the error it waits on. duplex_dlq_oldest_pending_age_seconds
// tells how long the oldest pending entry has waited. With -admin-user and -admin-password (or
// PGBISYNC_ADMIN_PASSWORD) the DLQ UI and API require basic auth (/metrics
// and /healthz stay open); without them the admin server must listen on a
// loopback address, and anyone on the machine can act on the DLQ.
//
// Before it creates anything, and again as the sync starts, pgbisync runs
// the preflight (package check/checkpg): per table, both sides side by
// side (columns and types, key, unique and check constraints, foreign keys,
// triggers, sequences and identity columns, replica identity, row counts, a
// sample diff), each finding a blocker, warning or fine with why and the SQL
// or flag that fixes it. Blockers stop the start with exit status 2 and the
// report on stderr; warnings are logged and exported as
// duplex_preflight_findings{table,check,severity}. -check prints the report
// on stdout and exits (0, or 2 with blockers), changing nothing.
//
// The sync writes with session_replication_role = replica, as logical
// replication does: ordinary triggers do not fire on the rows it writes
// (ENABLE ALWAYS ones do; -fire-triggers marks the listed ones ALWAYS;
// -all-triggers fires them all), and foreign keys are not checked on them.
// Keys fed by sequences (serial, identity) on both sides are a blocker
// unless -sequences interleave (A odd, B even) or ranges (A the lower half,
// B the upper) arranges them at start, recorded in the sequences' comments.
//
// -cpu-profile FILE writes a Go CPU profile (go tool pprof) of the whole
// run, from start-up until exit, to FILE; cmd/duplexbench sets it under its
// -profile.
//
// # The dead-letter queue from a terminal
//
// pgbisync -dlq <subcommand> talks to a running pgbisync's admin JSON API
// (-admin, default 127.0.0.1:8089; -admin-user and -admin-password as
// above):
//
//	pgbisync -dlq list    [-table T] [-reason R] [-field F] [-older-than 10m] [-status S] [-key id=42] [-limit N]
//	pgbisync -dlq show    -id N                 (the three-way view: base, a, b)
//	pgbisync -dlq resolve -winner a|b (-id N | filters [-dry-run])
//	pgbisync -dlq retry   (-id N | filters [-dry-run])
//	pgbisync -dlq dismiss (-id N | filters [-dry-run])
//
// With filters instead of -id an action acts on every pending entry they
// match; -dry-run only counts them. -json prints the API's answer as is.
// Exit status 0, 1 when the API answers an error (or a bulk action had
// failures), 2 on bad flags.
//
// SIGINT and SIGTERM stop it gracefully (exit status 0). Errors (bad flags,
// an unreachable database, a table without a primary key, wal_level not
// logical, an -lww-column that is not a timestamp, another instance
// running) exit with status 1 (2 for flag syntax and preflight blockers)
// and a message naming the flag, table or field at fault.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/dedup/dedupredis"
	"github.com/duplexsync/duplex/dlq/dlqpg"
	"github.com/duplexsync/duplex/metrics"
	"github.com/duplexsync/duplex/resolve"
)

// sideNames are the endpoints' names in the sync.
var sideNames = [2]string{"a", "b"}

func main() {
	os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
}

// mainExit runs pgbisync and returns its exit status.
func mainExit(args []string, stdout, stderr io.Writer) (code int) {
	if isDLQCommand(args) {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return dlqMain(ctx, args, stdout, stderr)
	}
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if cfg == nil { // flag syntax
		return 2
	}
	// From here on nothing reaches the terminal unfiltered.
	secrets := cfg.secrets()
	stdout = &redactingWriter{w: stdout, secrets: secrets}
	stderr = &redactingWriter{w: stderr, secrets: secrets}
	if err != nil {
		fmt.Fprintln(stderr, "pgbisync:", strings.ReplaceAll(err.Error(), "\n", "\npgbisync: "))
		return 1
	}
	if cfg.cpuProfile != "" {
		stopProfile, err := startCPUProfile(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "pgbisync:", err)
			return 1
		}
		defer func() {
			if err := stopProfile(); err != nil {
				fmt.Fprintln(stderr, "pgbisync:", err)
				if code == 0 {
					code = 1
				}
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal stops the sync gracefully; a second one, with the
	// default handling restored, kills the process.
	stopAfter := context.AfterFunc(ctx, stop)
	defer stopAfter()
	err = run(ctx, cfg, stdout, stderr)
	if pe, ok := errors.AsType[*duplex.PreflightError](err); ok {
		fmt.Fprintf(stderr, "pgbisync: preflight found %d blocker(s); the sync did not start\n", pe.Report.Count(duplex.Blocker))
		return 2
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "pgbisync: interrupted during start-up")
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "pgbisync:", strings.ReplaceAll(err.Error(), "\n", "\npgbisync: "))
		return 1
	}
	return 0
}

// startCPUProfile starts writing a CPU profile to path (-cpu-profile) and
// returns the function that stops it and closes the file.
func startCPUProfile(path string) (func() error, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(fmt.Errorf("-cpu-profile %s: %w", path, err), f.Close())
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("-cpu-profile %s: %w", path, err)
		}
		return nil
	}, nil
}

// side is one database of the sync.
type side struct {
	name     string // "a" or "b"
	dsn      string
	database string
	pool     *pgxpool.Pool
	tables   map[duplex.Table]tableInfo
	lock     *syncLock
	app      *applypg.Applier
	endpoint duplex.Endpoint // Source, and Applier/LoopGuard when not app itself
	close    func()          // releases the source
	slot     string          // the replication slot (-cdc logical)
	retained metrics.RetainedFunc

	// commitTimes: the server records commit timestamps
	// (track_commit_timestamp), for -conflict lww on the tables without
	// -lww-column.
	commitTimes bool
}

// connect opens a side's pool and checks that the database answers.
func connect(ctx context.Context, cfg *config, s *side) error {
	pcfg, err := pgxpool.ParseConfig(s.dsn)
	if err != nil {
		return fmt.Errorf("-%s: invalid connection string %s: %w", s.name, redactDSN(s.dsn), err)
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "pgbisync:" + cfg.name + ":" + s.name
	pcfg.MaxConns = max(pcfg.MaxConns, 8)
	s.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("-%s: connect to %s: %w", s.name, redactDSN(s.dsn), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := s.pool.QueryRow(pctx, "SELECT current_database()").Scan(&s.database); err != nil {
		return fmt.Errorf("-%s: cannot connect to %s: %w", s.name, redactDSN(s.dsn), err)
	}
	return nil
}

// resolver builds the resolver chain: field authority, then -conflict.
func resolver(cfg *config, sides [2]*side, logger *slog.Logger) (duplex.Resolver, string, error) {
	var chain []duplex.Resolver
	var errs []error
	if strings.TrimSpace(cfg.authority) != "" {
		auth, err := resolve.ParseAuthority(cfg.authority)
		if err != nil {
			return nil, "", fmt.Errorf("-authority: %w", err)
		}
		for _, s := range sides {
			cols := make(map[duplex.Table][]string, len(s.tables))
			for t, info := range s.tables {
				cols[t] = info.columns()
			}
			if err := auth.Validate(sideNames[:], cols); err != nil {
				errs = append(errs, fmt.Errorf("-authority (checked against -%s): %w", s.name, err))
			}
		}
		chain = append(chain, auth)
	}
	var policy duplex.Resolver
	desc := cfg.conflict
	switch cfg.conflict {
	case conflictLWW:
		var err error
		if policy, desc, err = lwwPolicy(cfg, sides, logger); err != nil {
			errs = append(errs, err)
		}
	case conflictDLQ:
		policy = resolve.DeadLetterAll()
	case conflictAWins:
		policy = resolve.SideWins("a")
	case conflictBWins:
		policy = resolve.SideWins("b")
	}
	if err := errors.Join(errs...); err != nil {
		return nil, "", err
	}
	// The chain ends with the policy; anything it leaves undecided is
	// dead-lettered by the Pipeline.
	return duplex.Chain(append(chain, policy)...), desc, nil
}

func run(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	level, _ := parseLevel(cfg.logLevel)
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	sides := [2]*side{{name: "a", dsn: cfg.a}, {name: "b", dsn: cfg.b}}
	defer func() {
		for _, s := range sides {
			if s.close != nil {
				s.close()
			}
			if s.lock != nil {
				s.lock.unlock()
			}
			if s.pool != nil {
				s.pool.Close()
			}
		}
	}()

	// Check everything before creating anything.
	for _, s := range sides {
		if err := connect(ctx, cfg, s); err != nil {
			return err
		}
	}
	if err := differentDatabases(ctx, sides[0].pool, sides[1].pool); err != nil {
		return err
	}
	if cfg.checkOnly {
		return checkOnly(ctx, cfg, sides, stdout, logger)
	}
	if cfg.cdc == cdcLogical {
		for _, s := range sides {
			if err := checkWALLevel(ctx, s.pool, s.name); err != nil {
				return err
			}
		}
	}
	var errs []error
	for _, s := range sides {
		var err error
		if s.tables, err = inspectTables(ctx, s.pool, s.name, cfg.tables); err != nil {
			errs = append(errs, err)
		}
		if cfg.cdc == cdcLogical && cfg.noReplicaIdentity {
			errs = append(errs, checkReplicaIdentity(s.name, cfg.tables, s.tables))
		}
		if s.commitTimes, err = trackCommitTimes(ctx, s.pool, s.name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := compareKeys(cfg.tables, sides[0].tables, sides[1].tables); err != nil {
		return err
	}
	res, resDesc, err := resolver(cfg, sides, logger)
	if err != nil {
		return err
	}
	// The preflight, before anything is created: blockers that no option
	// fixes refuse the start (status 2) with the report on stderr. The Sync
	// runs it again at start, making the fixes the options ask for.
	checker, err := preflight(cfg, sides, logger)
	if err != nil {
		return err
	}
	if r, err := checker.Check(ctx, duplex.CheckParams{}); err != nil {
		return err
	} else if r.Count(duplex.Blocker) > 0 {
		_ = r.Write(stderr)
		return &duplex.PreflightError{Report: r}
	}
	var rdb *redis.Client
	if cfg.redisURL != "" {
		ropts, err := redis.ParseURL(cfg.redisURL)
		if err != nil {
			return fmt.Errorf("-redis: invalid URL %s: %w", redactDSN(cfg.redisURL), err)
		}
		rdb = redis.NewClient(ropts)
		defer rdb.Close()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = rdb.Ping(pctx).Err()
		cancel()
		if err != nil {
			return fmt.Errorf("-redis: cannot reach %s: %w", redactDSN(cfg.redisURL), err)
		}
	}
	var adminLn net.Listener
	if cfg.admin != "" {
		if adminLn, err = net.Listen("tcp", cfg.admin); err != nil {
			return fmt.Errorf("-admin: %w", err)
		}
		defer adminLn.Close()
	}

	// One sync with this name at a time.
	for _, s := range sides {
		if s.lock, err = lock(ctx, s.pool, cfg.name, s.name, s.database, cfg.lockWait); err != nil {
			return err
		}
	}

	// State, appliers, sources: created when missing, kept on exit.
	for _, s := range sides {
		if s.app, err = applypg.New(ctx, s.pool, applypg.Config{Sync: cfg.name, Target: s.name, Logger: logger, Triggers: triggerConfig(cfg)}); err != nil {
			return fmt.Errorf("-%s: %w", s.name, err)
		}
	}
	for i, s := range sides {
		other := sides[1-i]
		// The other side's checkpoint of this source says whether the sync
		// ran before: then the slot must exist (a missing one means lost
		// changes, an error), else it is created now, before streaming, so
		// nothing committed from here on is missed.
		pos, err := other.app.Checkpoint(ctx, s.name)
		if err != nil {
			return fmt.Errorf("-%s: %w", other.name, err)
		}
		if err := setupSource(ctx, cfg, s, pos != "" || cfg.reconcile, logger); err != nil {
			return err
		}
	}
	deadLetters, err := dlqpg.New(ctx, sides[0].pool, dlqpg.Config{})
	if err != nil {
		return fmt.Errorf("-a: dead-letter queue: %w", err)
	}
	depth := func(ctx context.Context) ([]metrics.DepthRow, error) {
		rows, err := deadLetters.Depth(ctx)
		var out []metrics.DepthRow
		for _, r := range rows {
			if r.Sync == cfg.name {
				out = append(out, metrics.DepthRow{Direction: r.Direction, Table: r.Table, Reason: r.Reason, Count: r.Count, Oldest: r.Oldest})
			}
		}
		return out, err
	}
	slots := map[string]metrics.RetainedFunc{}
	for _, s := range sides {
		if s.slot != "" {
			slots[s.slot] = s.retained
		}
	}
	if cfg.maxRetained > 0 && len(slots) > 0 {
		go watchRetained(ctx, slots, cfg.maxRetained, logger)
	}
	directions := []string{"a_to_b", "b_to_a"}
	m := metrics.New(metrics.Config{Depth: zeroDepths(depth, directions, cfg.tables), Slots: slots, Logger: logger})
	initCounters(m, directions, cfg.tables)
	for _, s := range sides {
		s.endpoint.Name = s.name
		if s.endpoint.Applier == nil {
			s.endpoint.Applier = s.app
		}
		if rdb != nil {
			d, err := dedupredis.New(rdb, dedupredis.Config{Prefix: cfg.redisPrefix + cfg.name + ":" + s.name + ":"})
			if err != nil {
				return fmt.Errorf("-redis: %w", err)
			}
			s.endpoint.Deduper = d
		}
	}
	onboarding := metrics.NewOnboarding()
	pair, err := duplex.NewSync(&duplex.SyncConfig{
		Name: cfg.name, A: sides[0].endpoint, B: sides[1].endpoint, Preflight: checker,
		Resolver: res, DeadLetters: deadLetters, Observer: m, Logger: logger,
		Onboarding: duplex.OnboardingConfig{Disabled: !cfg.onboarding, Tables: cfg.tables, ChunkSize: cfg.onboardingChunk, Progress: func(p duplex.OnboardingProgress) {
			onboarding.Progress(p)
			if p.Done && !p.Skipped {
				fmt.Fprintf(stdout, "pgbisync: onboarded %s: compared %d, copied %d, agreed %d, decided %d, held %d (in the DLQ), deferred %d (to the stream) in %s\n",
					p.Table, p.Compared, p.Copied, p.Agreed, p.Decided, p.Held, p.Deferred, p.Elapsed.Round(time.Millisecond))
			}
		}},
		Options: duplex.Options{BatchSize: cfg.batch},
	})
	if err != nil {
		return err
	}

	if cfg.reconcile {
		return reconcileTables(ctx, pair, cfg, stdout)
	}

	adminURL := "none"
	if adminLn != nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(m, metrics.NewPreflight(pair.Report), onboarding)
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("GET /healthz", metrics.Health(metrics.HealthConfig{
			Directions: directions, MaxLag: time.Minute, Lag: m.Lag, Waiting: m.Waiting, Depth: depth,
			MaxRetainedWAL: cfg.maxRetained, Slots: slots, Onboarding: onboarding.Lines,
		}))
		if err := mountAdmin(mux, cfg, deadLetters, pair, logger); err != nil {
			return err
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
		go func() {
			if err := srv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("admin server stopped", slog.Any("err", err))
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		adminURL = "http://" + adminLn.Addr().String()
	}
	dedup := "postgres"
	if rdb != nil {
		dedup = "redis+postgres (" + redactDSN(cfg.redisURL) + ")"
	}
	fmt.Fprintf(stdout, "pgbisync: sync %s: a=%s b=%s tables=%s authority=%q conflict=%s cdc=%s dedup=%s admin=%s\n",
		cfg.name, redactDSN(cfg.a), redactDSN(cfg.b), tableList(cfg.tables), cfg.authority, resDesc, cfg.cdc, dedup, adminURL)

	// Hold the locks while the sync runs; losing one to another process
	// stops the sync.
	runCtx, stopRun := context.WithCancelCause(ctx)
	var holders sync.WaitGroup
	defer func() {
		stopRun(nil)
		holders.Wait() // before the locks are released
	}()
	for _, s := range sides {
		holders.Go(func() {
			if err := s.lock.hold(runCtx, cfg.lockCheck, logger); err != nil {
				stopRun(err)
			}
		})
	}
	done := make(chan error, 1)
	go func() { done <- pair.Run(runCtx) }()
	ab, ba := pair.Pipelines()
	for _, p := range []*duplex.Pipeline{ab, ba} {
		select {
		case <-p.Ready():
		case err := <-done:
			if cause := context.Cause(runCtx); errors.Is(cause, errLockLost) {
				return fmt.Errorf("stopped: %w", cause)
			}
			if pe, ok := errors.AsType[*duplex.PreflightError](err); ok {
				_ = pe.Report.Write(stderr)
				return pe
			}
			return syncErr(err)
		}
	}
	fmt.Fprintln(stdout, readyLine)
	logger.Info("sync running", "sync", cfg.name, "tables", tableList(cfg.tables))
	err = <-done
	if cause := context.Cause(runCtx); errors.Is(cause, errLockLost) {
		return fmt.Errorf("stopped: %w", cause)
	}
	if err != nil {
		return syncErr(err)
	}
	logger.Info("sync stopped", "sync", cfg.name)
	return nil
}

// conflictResolutions are the resolution labels of duplex_conflicts_total.
var conflictResolutions = []string{"applied", "merged", "kept_target", "dead_lettered"}

// deadLetterReasons are the reasons a change is dead-lettered for.
var deadLetterReasons = []duplex.Reason{duplex.ReasonConflict, duplex.ReasonPermanentError,
	duplex.ReasonRetriesExhausted, duplex.ReasonTruncate, duplex.ReasonInvalid}

// initCounters creates the applied and conflict counters of every
// direction and table at zero, so that they show (and rate() works) from
// the start, not from the first event.
func initCounters(m *metrics.Prometheus, directions []string, tables []duplex.Table) {
	for _, d := range directions {
		for _, t := range tables {
			m.Collectors("applied", d, t.String())
			for k := duplex.UpdateUpdate; k <= duplex.DeleteUpdate; k++ {
				for _, r := range conflictResolutions {
					m.Collectors("conflicts", d, t.String(), k.String(), r)
				}
			}
		}
	}
}

// zeroDepths reports a zero DLQ depth for every direction, table and
// reason without pending entries, so that duplex_dlq_depth shows an empty
// queue as 0 rather than as no series.
func zeroDepths(depth metrics.DepthFunc, directions []string, tables []duplex.Table) metrics.DepthFunc {
	return func(ctx context.Context) ([]metrics.DepthRow, error) {
		rows, err := depth(ctx)
		if err != nil {
			return rows, err
		}
		type group struct{ direction, table, reason string }
		have := make(map[group]bool, len(rows))
		for _, r := range rows {
			have[group{r.Direction, r.Table, r.Reason}] = true
		}
		for _, d := range directions {
			for _, t := range tables {
				for _, r := range deadLetterReasons {
					if g := (group{d, t.String(), string(r)}); !have[g] {
						rows = append(rows, metrics.DepthRow{Direction: d, Table: g.table, Reason: g.reason})
					}
				}
			}
		}
		return rows, nil
	}
}

// setupSource builds a side's change source and creates its slot and
// publication when missing.
func setupSource(ctx context.Context, cfg *config, s *side, resuming bool, logger *slog.Logger) error {
	if cfg.cdc == cdcPoll {
		return pollSource(ctx, cfg, s, logger)
	}
	src, err := pglogical.New(ctx, pglogical.Config{
		ConnString: s.dsn, Sync: cfg.name, System: s.name, Tables: cfg.tables,
		SetReplicaIdentity: !cfg.noReplicaIdentity, Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("-%s: %w", s.name, err)
	}
	s.endpoint.Source, s.close = src, src.Close
	s.slot, s.retained = src.Slot(), src.RetainedWAL
	if cfg.reconcile {
		return nil // nothing streams: no slot is created
	}
	if err := src.Setup(ctx, resuming); err != nil {
		return fmt.Errorf("-%s: %w", s.name, err)
	}
	return nil
}

// syncErr words a failure of the running sync.
func syncErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sync failed: %w", err)
}

func tableList(ts []duplex.Table) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.String()
	}
	return strings.Join(parts, ",")
}

// parseLevel reads -log-level.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("-log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// watchRetained warns, every minute, about each slot holding back more WAL
// than limit. The slot is kept (dropping it would lose changes); the
// warning and /healthz say that the sync must catch up or be removed.
func watchRetained(ctx context.Context, slots map[string]metrics.RetainedFunc, limit int64, logger *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for name, read := range slots {
			if n, err := read(ctx); err == nil && n > limit {
				logger.Warn("replication slot retains more WAL than -max-retained-wal; the server keeps it until the sync catches up",
					"slot", name, "retained_bytes", n, "limit_bytes", limit)
			}
		}
	}
}

// reconcileTables runs -reconcile: one batched compare-and-repair pass
// over -tables (Sync.ReconcileTables), a line per table on stdout.
func reconcileTables(ctx context.Context, pair *duplex.Sync, cfg *config, stdout io.Writer) error {
	ps, err := pair.ReconcileTables(ctx, cfg.tables, cfg.onboardingChunk)
	for _, p := range ps {
		fmt.Fprintf(stdout, "pgbisync: reconciled %s: compared %d, copied %d, agreed %d, decided %d, held %d (in the DLQ), deferred %d (a merge in progress) in %s (%.0f keys/s)\n",
			p.Table, p.Compared, p.Copied, p.Agreed, p.Decided, p.Held, p.Deferred, p.Elapsed.Round(time.Millisecond), p.Rate())
	}
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	return nil
}
