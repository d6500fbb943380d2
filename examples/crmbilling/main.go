// Command crmbilling is the story of duplex: a CRM and a billing system, two
// PostgreSQL databases that both change the same customers, kept in
// agreement by a two-way sync while simulated users edit both sides.
//
// The dead-letter queue is kept in PostgreSQL (the duplex schema of the
// CRM database). The CRM owns name and email, billing owns payment_status and
// payment_method, both write last_activity (the later write wins, by the
// updated_at column; writes too close to call go to the dead-letter queue).
// It prints a progress line every second and ends with a verdict: the two
// tables compared row by row, differences listed with their DLQ entries.
//
//	go run ./examples/crmbilling -duration 30s
//
// -duration 0 keeps it running (with the DLQ admin UI at /, its JSON API at
// /dlq, /metrics and /healthz on -admin) until interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/dedup/dedupredis"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/dlq/dlqpg"
	"github.com/duplexsync/duplex/metrics"
	"github.com/duplexsync/duplex/resolve"
)

var customers = duplex.Table{Schema: "public", Name: "customers"}

const schema = `CREATE TABLE customers (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	email text NOT NULL,
	payment_status text NOT NULL DEFAULT 'trial',
	payment_method text,
	last_activity text,
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
)`

type options struct {
	pg       string
	prefix   string
	redisURL string
	admin    string
	duration time.Duration
	rate     int
	rows     int
	skew     time.Duration
	verbose  bool
}

func main() {
	var o options
	flag.StringVar(&o.pg, "pg", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server (any database); the demo creates duplex_demo_crm and duplex_demo_billing")
	flag.StringVar(&o.prefix, "db-prefix", "duplex_demo_", "prefix of the two databases' names (<prefix>crm, <prefix>billing); they are dropped and re-created")
	flag.StringVar(&o.redisURL, "redis", "redis://127.0.0.1:6379/0", "Redis for dedup (empty: PostgreSQL ledger only)")
	flag.StringVar(&o.admin, "admin", "127.0.0.1:8089", "loopback address for the DLQ admin (/, /dlq), /metrics and /healthz (empty: none)")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "how long users edit (0: until interrupted)")
	flag.IntVar(&o.rate, "rate", 40, "edits per second on each side")
	flag.IntVar(&o.rows, "rows", 200, "customers")
	flag.DurationVar(&o.skew, "skew", 50*time.Millisecond, "clock-skew tolerance of last-write-wins on last_activity")
	flag.BoolVar(&o.verbose, "v", false, "log the sync's own messages")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "crmbilling:", err)
		os.Exit(1)
	}
}

func dbURL(server, name string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("invalid -pg %q: %w", server, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// dropSlot removes the demo's replication slot when it ends, so that it
// never holds WAL on the server afterwards.
func dropSlot(pool *pgxpool.Pool, slot string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, slot)
}

// prepare (re)creates a demo database with the seeded customers table.
func prepare(ctx context.Context, server, name string, rows int) (*pgxpool.Pool, string, error) {
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		return nil, "", fmt.Errorf("connect to %s: %w (is PostgreSQL running? try make services)", server, err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name); err != nil {
		return nil, "", err
	}
	if _, err := admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name); err != nil {
		return nil, "", fmt.Errorf("drop old slots of %s: %w", name, err)
	}
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return nil, "", err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, "", err
	}
	u, err := dbURL(server, name)
	if err != nil {
		return nil, "", err
	}
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		return nil, "", err
	}
	if _, err := pool.Exec(ctx, schema); err != nil {
		pool.Close()
		return nil, "", err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO customers (id, name, email, payment_status, updated_at)
		SELECT i, 'Customer ' || i, 'c' || i || '@example.com', 'trial', '2026-01-01' FROM generate_series(1, $1) i`, rows); err != nil {
		pool.Close()
		return nil, "", err
	}
	return pool, u, nil
}

type side struct {
	name string
	pool *pgxpool.Pool
	url  string
	src  *pglogical.Source
	app  *applypg.Applier
}

func run(ctx context.Context, o options) error {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	syncName := o.prefix + "crm_billing"
	sides := []*side{{name: "crm"}, {name: "billing"}}
	for _, s := range sides {
		var err error
		if s.pool, s.url, err = prepare(ctx, o.pg, o.prefix+s.name, o.rows); err != nil {
			return err
		}
		defer s.pool.Close()
		if s.src, err = pglogical.New(ctx, pglogical.Config{
			ConnString: s.url, Sync: syncName, System: s.name, Tables: []duplex.Table{customers},
			SetReplicaIdentity: true, Logger: logger,
		}); err != nil {
			return err
		}
		defer s.src.Close()
		if err := s.src.Setup(ctx, false); err != nil {
			return err
		}
		defer dropSlot(s.pool, s.src.Slot())
		if s.app, err = applypg.New(ctx, s.pool, applypg.Config{Sync: syncName, Target: s.name, Logger: logger}); err != nil {
			return err
		}
		// Replication origins are cluster-wide: leave none behind.
		defer func(a *applypg.Applier) { _ = a.DropOrigins(context.WithoutCancel(ctx)) }(s.app)
	}
	crm, billing := sides[0], sides[1]

	authority, err := resolve.ParseAuthority("customers.name=crm,customers.email=crm,customers.payment_status=billing,customers.payment_method=billing,customers.last_activity=both,customers.updated_at=both")
	if err != nil {
		return err
	}
	if err := authority.Validate([]string{"crm", "billing"}, map[duplex.Table][]string{
		customers: {"id", "name", "email", "payment_status", "payment_method", "last_activity", "updated_at"},
	}); err != nil {
		return err
	}
	lww, err := resolve.NewLWW("updated_at", o.skew)
	if err != nil {
		return err
	}
	// The dead-letter queue lives in the sync's own schema of the CRM database.
	deadLetters, err := dlqpg.New(ctx, crm.pool, dlqpg.Config{})
	if err != nil {
		return err
	}
	depth := func(ctx context.Context) ([]metrics.DepthRow, error) {
		rows, err := deadLetters.Depth(ctx)
		out := make([]metrics.DepthRow, len(rows))
		for i, r := range rows {
			out[i] = metrics.DepthRow{Direction: r.Direction, Table: r.Table, Reason: r.Reason, Count: r.Count}
		}
		return out, err
	}
	m := metrics.New(metrics.Config{
		Depth: depth,
		Slots: map[string]metrics.RetainedFunc{crm.src.Slot(): crm.src.RetainedWAL, billing.src.Slot(): billing.src.RetainedWAL},
	})
	endpoint := func(s *side) (duplex.Endpoint, error) {
		e := duplex.Endpoint{Name: s.name, Source: s.src, Applier: s.app}
		if o.redisURL != "" {
			ropts, err := redis.ParseURL(o.redisURL)
			if err != nil {
				return e, fmt.Errorf("invalid -redis %q: %w", o.redisURL, err)
			}
			client := redis.NewClient(ropts)
			d, err := dedupredis.New(client, dedupredis.Config{Prefix: "duplex:" + syncName + ":" + s.name + ":", TTL: time.Hour})
			if err != nil {
				return e, err
			}
			e.Deduper = d
		}
		return e, nil
	}
	a, err := endpoint(crm)
	if err != nil {
		return err
	}
	b, err := endpoint(billing)
	if err != nil {
		return err
	}
	pair, err := duplex.NewSync(&duplex.SyncConfig{
		Name: syncName, A: a, B: b,
		Resolver:    duplex.Chain(authority, lww),
		DeadLetters: deadLetters,
		Observer:    m,
		Logger:      logger,
	})
	if err != nil {
		return err
	}

	if o.admin != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(m)
		mux := http.NewServeMux()
		// The DLQ admin (UI at /, JSON API at /dlq): without a login, so
		// only on a loopback address (the default).
		if !isLoopback(o.admin) {
			return fmt.Errorf("-admin %s: the demo's admin has no login; use a loopback address such as 127.0.0.1:8089", o.admin)
		}
		admin, err := dlq.NewAdmin(dlq.AdminConfig{
			Store: deadLetters, Actions: dlq.SyncActions(pair), Auth: dlq.NoAuth,
			Sides: [2]string{"crm", "billing"}, Title: "crm ⇄ billing dead letters", Logger: logger,
		})
		if err != nil {
			return err
		}
		mux.Handle("/", admin)
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("/healthz", metrics.Health(metrics.HealthConfig{
			Directions: []string{"crm_to_billing", "billing_to_crm"},
			MaxLag:     10 * time.Second, MaxDLQDepth: 100,
			Lag: m.Lag, Depth: depth,
		}))
		srv := &http.Server{Addr: o.admin, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintln(os.Stderr, "crmbilling: admin server:", err)
			}
		}()
		defer srv.Close()
		fmt.Printf("dead-letter queue on http://%s/ (JSON: /dlq), metrics on http://%s/metrics, health on http://%s/healthz\n", o.admin, o.admin, o.admin)
	}

	syncCtx, stopSync := context.WithCancel(ctx)
	defer stopSync()
	syncDone := make(chan error, 1)
	go func() { syncDone <- pair.Run(syncCtx) }()

	// Simulated users.
	usersCtx, stopUsers := context.WithCancel(ctx)
	if o.duration > 0 {
		usersCtx, stopUsers = context.WithTimeout(ctx, o.duration)
	}
	defer stopUsers()
	var edits [2]atomic.Int64
	var wg sync.WaitGroup
	for i, s := range sides {
		wg.Go(func() { simulate(usersCtx, s, o, &edits[i]) })
	}
	fmt.Printf("syncing %d customers between crm and billing; users edit both sides for %s\n", o.rows, durationText(o.duration))
	progress := func() {
		depth := 0
		if rows, err := deadLetters.Depth(context.Background()); err == nil {
			for _, r := range rows {
				depth += r.Count
			}
		}
		fmt.Printf("\redits crm=%d billing=%d | applied crm→billing=%d billing→crm=%d | lag %s / %s | conflicts %d | dlq %d   ",
			edits[0].Load(), edits[1].Load(),
			applied(m, "crm_to_billing"), applied(m, "billing_to_crm"),
			m.Lag("crm_to_billing").Round(time.Millisecond), m.Lag("billing_to_crm").Round(time.Millisecond),
			conflicts(m), depth)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-usersCtx.Done():
			break wait
		case err := <-syncDone:
			stopUsers()
			wg.Wait()
			return fmt.Errorf("sync stopped: %w", err)
		case <-tick.C:
			progress()
		}
	}
	wg.Wait()
	if ctx.Err() != nil && o.duration == 0 {
		fmt.Println("\ninterrupted")
	}
	// Let the sync catch up: quiet when nothing was applied for two seconds.
	fmt.Println("\nusers stopped; waiting for the sync to settle")
	last, quietSince := int64(-1), time.Now()
	for time.Since(quietSince) < 2*time.Second {
		select {
		case err := <-syncDone:
			return fmt.Errorf("sync stopped: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
		n := applied(m, "crm_to_billing") + applied(m, "billing_to_crm")
		if n != last {
			last, quietSince = n, time.Now()
		}
	}
	progress()
	stopSync()
	if err := <-syncDone; err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	fmt.Println()
	return verdict(context.Background(), crm.pool, billing.pool, deadLetters)
}

// isLoopback reports whether addr (host:port) listens on a loopback
// address only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func durationText(d time.Duration) string {
	if d == 0 {
		return "until interrupted"
	}
	return d.String()
}

func applied(m *metrics.Prometheus, dir string) int64 {
	return int64(counterValue(m.Collectors("applied", dir, customers.String())))
}

func conflicts(m *metrics.Prometheus) int64 {
	var n float64
	for _, dir := range []string{"crm_to_billing", "billing_to_crm"} {
		for _, kind := range []string{"update_update", "insert_insert", "update_delete", "delete_update"} {
			for _, res := range []string{"applied", "kept_target", "merged", "dead_lettered"} {
				n += counterValue(m.Collectors("conflicts", dir, customers.String(), kind, res))
			}
		}
	}
	return int64(n)
}

// simulate edits one side: the CRM renames customers and changes emails,
// billing changes payment details; both record last_activity, sometimes on
// the same customer at nearly the same time (a same-field conflict).
func simulate(ctx context.Context, s *side, o options, edits *atomic.Int64) {
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(len(s.name))))
	every := time.Second / time.Duration(max(o.rate, 1))
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		id := rnd.IntN(o.rows) + 1
		var sql string
		var args []any
		switch {
		case n%10 == 0: // both sides touch last_activity of the same few customers
			sql, args = `UPDATE customers SET last_activity = $2, updated_at = clock_timestamp() WHERE id = $1`, []any{n%7 + 1, s.name + " visit " + fmt.Sprint(n)}
		case s.name == "crm" && n%2 == 0:
			sql, args = `UPDATE customers SET name = $2, updated_at = clock_timestamp() WHERE id = $1`, []any{id, fmt.Sprintf("Customer %d (rev %d)", id, n)}
		case s.name == "crm":
			sql, args = `UPDATE customers SET email = $2, last_activity = 'crm edit', updated_at = clock_timestamp() WHERE id = $1`, []any{id, fmt.Sprintf("c%d.%d@example.com", id, n)}
		case n%2 == 0:
			status := []string{"trial", "active", "past_due", "cancelled"}[rnd.IntN(4)]
			sql, args = `UPDATE customers SET payment_status = $2, updated_at = clock_timestamp() WHERE id = $1`, []any{id, status}
		default:
			method := []string{"card", "sepa", "invoice"}[rnd.IntN(3)]
			sql, args = `UPDATE customers SET payment_method = $2, last_activity = 'billing edit', updated_at = clock_timestamp() WHERE id = $1`, []any{id, method}
		}
		if _, err := s.pool.Exec(ctx, sql, args...); err == nil {
			edits.Add(1)
		}
	}
}

// verdict compares both tables and explains every difference.
func verdict(ctx context.Context, crm, billing *pgxpool.Pool, dl dlq.Store) error {
	read := func(p *pgxpool.Pool) (map[int64]string, error) {
		rows, err := p.Query(ctx, `SELECT id, row(name, email, payment_status, payment_method, last_activity)::text FROM customers`)
		if err != nil {
			return nil, err
		}
		out := map[int64]string{}
		for rows.Next() {
			var id int64
			var v string
			if err := rows.Scan(&id, &v); err != nil {
				return nil, err
			}
			out[id] = v
		}
		return out, rows.Err()
	}
	a, err := read(crm)
	if err != nil {
		return err
	}
	b, err := read(billing)
	if err != nil {
		return err
	}
	entries, _, err := dl.List(ctx, dlq.Filter{Limit: 10000})
	if err != nil {
		return err
	}
	inDLQ := map[string][]string{}
	for _, e := range entries {
		k := e.Change.Key.String()
		inDLQ[k] = append(inDLQ[k], fmt.Sprintf("%s %s: %s", e.Direction, e.Reason, e.Error))
	}
	var diffs []int64
	for id, v := range a {
		if b[id] != v {
			diffs = append(diffs, id)
		}
	}
	for id := range b {
		if _, ok := a[id]; !ok {
			diffs = append(diffs, id)
		}
	}
	sort.Slice(diffs, func(i, j int) bool { return diffs[i] < diffs[j] })
	fmt.Printf("compared %d customers on crm with %d on billing; %d dead-letter entries\n", len(a), len(b), len(entries))
	if len(diffs) == 0 {
		fmt.Println("verdict: converged")
		return nil
	}
	unexplained := 0
	for _, id := range diffs {
		k := fmt.Sprintf("id=%d", id)
		fmt.Printf("  %s differs:\n    crm:     %s\n    billing: %s\n", k, a[id], b[id])
		if len(inDLQ[k]) == 0 {
			unexplained++
			fmt.Println("    (no DLQ entry!)")
		}
		for _, e := range inDLQ[k] {
			fmt.Println("    dlq:", strings.ReplaceAll(e, "\n", " "))
		}
	}
	if unexplained > 0 {
		return fmt.Errorf("verdict: %d customers differ without a DLQ entry", unexplained)
	}
	fmt.Printf("verdict: converged except %d customers held in the DLQ for review\n", len(diffs))
	return nil
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	close(ch)
	var n float64
	for m := range ch {
		var pb dto.Metric
		if m.Write(&pb) == nil && pb.Counter != nil {
			n += pb.Counter.GetValue()
		}
	}
	return n
}
