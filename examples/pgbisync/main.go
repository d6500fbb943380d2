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
// duplex schema; -name is lower-cased in those names. A replication slot
// dropped or invalidated after the sync started means lost changes:
// pgbisync refuses to start, naming the slot, unless -recreate-slots,
// which re-creates it with a warning (then run -reconcile).
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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pgpoll"
	"github.com/duplexsync/duplex/check/checkpg"
	"github.com/duplexsync/duplex/duplexpg"
	"github.com/duplexsync/duplex/internal/pgutil"
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

// run opens both databases, builds the sync (duplexpg) from the flags and
// runs it until ctx ends.
func run(ctx context.Context, cfg *config, stdout, stderr io.Writer) (err error) {
	level, _ := parseLevel(cfg.logLevel)
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	var ends [2]*duplexpg.Endpoint
	defer func() {
		for _, e := range ends {
			if e == nil {
				continue
			}
			if cerr := e.Close(); cerr != nil {
				logger.Warn("cannot release the database", "side", e.SystemName(), slog.Any("err", cerr))
			}
		}
	}()
	for i, dsn := range []string{cfg.a, cfg.b} {
		name := sideNames[i]
		if ends[i], err = duplexpg.Open(ctx, duplexpg.EndpointConfig{
			Sync: cfg.name, System: name, ConnString: dsn, Label: "-" + name,
			ApplicationName: "pgbisync:" + cfg.name + ":" + name, Logger: logger,
		}); err != nil {
			return err
		}
	}
	scfg := syncConfig(cfg, stdout, logger)
	if cfg.checkOnly {
		return checkOnly(ctx, ends, scfg, stdout)
	}
	if strings.TrimSpace(cfg.authority) != "" {
		if scfg.Authority, err = resolve.ParseAuthority(cfg.authority); err != nil {
			return fmt.Errorf("-authority: %w", err)
		}
	}
	if cfg.redisURL != "" {
		rdb, err := redisClient(ctx, cfg.redisURL)
		if err != nil {
			return err
		}
		defer rdb.Close()
		scfg.Redis = rdb
	}
	var adminLn net.Listener
	var reg *prometheus.Registry
	if cfg.admin != "" {
		if adminLn, err = net.Listen("tcp", cfg.admin); err != nil {
			return fmt.Errorf("-admin: %w", err)
		}
		defer adminLn.Close()
		reg = prometheus.NewRegistry()
		scfg.Registerer = reg
	}

	pair, err := duplexpg.NewSync(ctx, ends[0], ends[1], scfg)
	if pe, ok := errors.AsType[*duplex.PreflightError](err); ok {
		_ = pe.Report.Write(stderr)
		return pe
	}
	if err != nil {
		return lockError(err)
	}
	defer func() {
		if cerr := pair.Close(); cerr != nil {
			logger.Warn("cannot release the sync", slog.Any("err", cerr))
		}
	}()
	if cfg.reconcile {
		return reconcileTables(ctx, pair, cfg, stdout)
	}

	adminURL := "none"
	if adminLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("GET /healthz", pair.Health(time.Minute))
		if err := mountAdmin(mux, cfg, pair, logger); err != nil {
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
	if cfg.redisURL != "" {
		dedup = "redis+postgres (" + pgutil.RedactDSN(cfg.redisURL) + ")"
	}
	policy := cfg.conflict
	if cfg.conflict == conflictLWW {
		policy = pair.Policy()
	}
	fmt.Fprintf(stdout, "pgbisync: sync %s: a=%s b=%s tables=%s authority=%q conflict=%s cdc=%s dedup=%s admin=%s\n",
		cfg.name, pgutil.RedactDSN(cfg.a), pgutil.RedactDSN(cfg.b), tableList(cfg.tables), cfg.authority, policy, cfg.cdc, dedup, adminURL)

	done := make(chan error, 1)
	go func() { done <- pair.Run(ctx) }()
	select {
	case <-pair.Ready():
	case err := <-done:
		return runError(err, stderr)
	}
	fmt.Fprintln(stdout, readyLine)
	logger.Info("sync running", "sync", cfg.name, "tables", tableList(cfg.tables))
	if err := runError(<-done, stderr); err != nil {
		return err
	}
	logger.Info("sync stopped", "sync", cfg.name)
	return nil
}

// syncConfig is what the flags ask of duplexpg, but -authority and -redis.
func syncConfig(cfg *config, stdout io.Writer, logger *slog.Logger) duplexpg.Config {
	c := duplexpg.Config{
		Tables: cfg.tables, LWWColumn: cfg.lwwColumn, Skew: cfg.skew,
		KeepReplicaIdentity: cfg.noReplicaIdentity,
		Triggers:            applypg.TriggerConfig{All: cfg.allTriggers, Fire: cfg.fireTriggers},
		Sequences:           checkpg.SequenceFix(cfg.sequences),
		SkipOnboarding:      !cfg.onboarding, OnboardingChunk: cfg.onboardingChunk,
		ReconcileOnly: cfg.reconcile, RecreateSlots: cfg.recreateSlots, RedisPrefix: cfg.redisPrefix,
		LockWait: cfg.lockWait, LockCheck: cfg.lockCheck, MaxRetainedWAL: cfg.maxRetained,
		OptionLabels: map[string]string{
			"LWWColumn": "-conflict lww -lww-column", "KeepReplicaIdentity": "-no-replica-identity",
			"Capture": "-cdc", "Authority": "-authority", "Redis": "-redis", "RecreateSlots": "-recreate-slots",
		},
		Options: duplex.Options{BatchSize: cfg.batch},
		Logger:  logger,
	}
	// duplexpg reads zero as its default; the flags' zero means none.
	if c.Skew == 0 {
		c.Skew = -1
	}
	if c.LockWait == 0 {
		c.LockWait = -1
	}
	if c.MaxRetainedWAL == 0 {
		c.MaxRetainedWAL = -1
	}
	switch cfg.conflict {
	case conflictDLQ:
		c.Policy = resolve.DeadLetterAll()
	case conflictAWins:
		c.Policy = resolve.SideWins("a")
	case conflictBWins:
		c.Policy = resolve.SideWins("b")
	}
	if cfg.cdc == cdcPoll {
		c.Capture = duplexpg.Poll
		c.Poll = pgpoll.Config{Column: cfg.pollColumn, ColumnTimeZone: cfg.pollTimeZone, Interval: cfg.pollInterval, DeleteDetection: pollDeletes[cfg.pollDeletes]}
	}
	c.OnboardingProgress = func(p duplex.OnboardingProgress) {
		if p.Done && !p.Skipped {
			fmt.Fprintf(stdout, "pgbisync: onboarded %s: compared %d, copied %d, agreed %d, decided %d, held %d (in the DLQ), deferred %d (to the stream) in %s\n",
				p.Table, p.Compared, p.Copied, p.Agreed, p.Decided, p.Held, p.Deferred, p.Elapsed.Round(time.Millisecond))
		}
	}
	return c
}

// redisClient connects to -redis and checks that it answers.
func redisClient(ctx context.Context, rawURL string) (*redis.Client, error) {
	ropts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("-redis: invalid URL %s: %w", pgutil.RedactDSN(rawURL), err)
	}
	rdb := redis.NewClient(ropts)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		return nil, errors.Join(fmt.Errorf("-redis: cannot reach %s: %w", pgutil.RedactDSN(rawURL), err), rdb.Close())
	}
	return rdb, nil
}

// lockError words a refusal by the sync's lock in pgbisync's terms.
func lockError(err error) error {
	held, ok := errors.AsType[*duplexpg.LockHeldError](err)
	if !ok {
		return err
	}
	holder := ""
	if held.Holder != "" {
		holder = " (lock held by " + held.Holder + ")"
	}
	msg := fmt.Sprintf("%s: another pgbisync with -name %s is already running on database %s%s: refusing to start (two syncs with one name would apply every change twice); stop it first",
		held.Label, held.Sync, held.Database, holder)
	if errors.Is(err, duplexpg.ErrLockLost) {
		return fmt.Errorf("stopped: %w on %s: %s", duplexpg.ErrLockLost, held.Label, msg)
	}
	return errors.New(msg)
}

// runError words the end of the running sync: nil, a lost lock, a
// preflight blocker (its report on stderr) or a failure.
func runError(err error, stderr io.Writer) error {
	switch pe, isPreflight := errors.AsType[*duplex.PreflightError](err); {
	case err == nil:
		return nil
	case errors.Is(err, duplexpg.ErrLockLost):
		return lockError(err)
	case isPreflight:
		_ = pe.Report.Write(stderr)
		return pe
	}
	return fmt.Errorf("sync failed: %w", err)
}

// tableList joins the tables' names with commas.
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

// reconcileTables runs -reconcile: one batched compare-and-repair pass
// over -tables (Sync.ReconcileTables), a line per table on stdout.
func reconcileTables(ctx context.Context, pair *duplexpg.Sync, cfg *config, stdout io.Writer) error {
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
