// Package e2e holds end-to-end tests of a two-way sync between two real
// PostgreSQL databases: logical replication sources, PostgreSQL appliers,
// resolvers, dedup and the loop guard together.
package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/testenv"
	"github.com/duplexsync/duplex/metrics"
	"github.com/duplexsync/duplex/resolve"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var customers = duplex.Table{Schema: "public", Name: "customers"}

const ddl = `CREATE TABLE customers (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	email text NOT NULL,
	status text NOT NULL,
	visits bigint NOT NULL DEFAULT 0,
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp())`

type pair struct {
	a, b     *testenv.DB
	dlq      *dlq.Memory
	events   *counter
	syncName string
	tables   []duplex.Table
	resolver duplex.Resolver
	logger   *slog.Logger
	stop     func()
	done     chan error
	sync     *duplex.Sync // the running sync
	running  bool
	// wrap, when set, wraps each side's source (fault injection).
	wrap func(duplex.ChangeSource) duplex.ChangeSource
	// applier, when set, wraps each side's Applier (fault injection).
	applier func(name string, a *applypg.Applier) duplex.Applier
	// applyConfig, when set, adjusts each side's applypg.Config.
	applyConfig func(*applypg.Config)
	// preflight, when set, builds the sync's Preflight (SyncConfig.Preflight).
	preflight func(p *pair) duplex.Preflight
	// onboarding configures the Sync's onboarding (off unless Tables set).
	onboarding duplex.OnboardingConfig
	// seeded is the number of rows both sides held before the first start;
	// the first start records them as agreed (Sync.Reconcile).
	seeded int
}

// counter counts events for the tests and passes them on to a Prometheus
// exporter, whose output metrics_test.go checks.
type counter struct {
	*metrics.Prometheus
	mu        sync.Mutex
	applied   map[string]int
	noop      map[string]int
	conflicts map[string]int
}

// Skipped counts the changes settled without a write (the target held
// them already, often written back by the other direction's merge).
func (c *counter) Skipped(ctx context.Context, e duplex.SkippedEvent) {
	c.Prometheus.Skipped(ctx, e)
	if e.Reason != duplex.SkipNoop {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noop[e.Direction.String()] += e.Count
}

// settled returns how many changes were applied or found already there.
func (c *counter) settled() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range []map[string]int{c.applied, c.noop} {
		for _, v := range m {
			n += v
		}
	}
	return n
}

func (c *counter) Applied(ctx context.Context, e duplex.AppliedEvent) {
	c.Prometheus.Applied(ctx, e)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applied[e.Direction.String()] += e.Count
}

func (c *counter) Conflicted(ctx context.Context, e duplex.ConflictEvent) {
	c.Prometheus.Conflicted(ctx, e)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conflicts[e.Kind.String()+"/"+string(e.Resolution)]++
}

func (c *counter) total() (applied int, conflicts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.applied {
		applied += n
	}
	for _, n := range c.conflicts {
		conflicts += n
	}
	return applied, conflicts
}

// startPair creates two databases with the same seeded customers and runs
// a two-way sync between them with resolver.
func startPair(t *testing.T, rows int, resolver duplex.Resolver) *pair {
	t.Helper()
	return startPairWith(t, rows, resolver, nil)
}

// startPairWith is startPair with each side's source wrapped by wrap.
func startPairWith(t *testing.T, rows int, resolver duplex.Resolver, wrap func(duplex.ChangeSource) duplex.ChangeSource) *pair {
	t.Helper()
	return startPairOf(t, []duplex.Table{customers}, resolver, wrap, rows, func(pool *pgxpool.Pool) {
		exec(t, pool, ddl)
		exec(t, pool, `INSERT INTO customers (id, name, email, status, updated_at)
			SELECT i, 'n' || i, 'e' || i, 'new', '2026-01-01' FROM generate_series(1, $1) i`, rows)
	})
}

// startPairOf creates two databases, runs schema on each (it creates
// tables and seeds their rows) and runs a two-way sync of tables between
// them with resolver, each side's source wrapped by wrap when not nil;
// customers 1..seeded, seeded alike on both, are recorded as agreed.
func startPairOf(t *testing.T, tables []duplex.Table, resolver duplex.Resolver, wrap func(duplex.ChangeSource) duplex.ChangeSource, seeded int, schema func(*pgxpool.Pool), opts ...func(*pair)) *pair {
	t.Helper()
	p := &pair{a: testenv.Postgres(t), b: testenv.Postgres(t), dlq: dlq.NewMemory(dlq.MemoryConfig{}),
		events:   &counter{applied: map[string]int{}, noop: map[string]int{}, conflicts: map[string]int{}},
		syncName: testenv.UniqueName(t, "e2e"), tables: tables, resolver: resolver, wrap: wrap, seeded: seeded,
		logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		p.logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	for _, db := range []*testenv.DB{p.a, p.b} {
		testenv.RequireLogical(t, db)
		schema(db.Pool)
	}
	p.events.Prometheus = metrics.New(metrics.Config{Depth: func(ctx context.Context) ([]metrics.DepthRow, error) {
		rows, err := p.dlq.Depth(ctx)
		out := make([]metrics.DepthRow, len(rows))
		for i, r := range rows {
			out[i] = metrics.DepthRow{Direction: r.Direction, Table: r.Table, Reason: r.Reason, Count: r.Count}
		}
		return out, err
	}})
	for _, o := range opts {
		o(p)
	}
	p.start(t)
	t.Cleanup(func() { p.halt(t) })
	return p
}

// start runs the sync with new sources and appliers: the first time it
// creates the slots; later it resumes where the previous run stopped.
func (p *pair) start(t *testing.T) {
	t.Helper()
	endpoint := func(name string, db *testenv.DB) duplex.Endpoint {
		src, err := pglogical.New(t.Context(), pglogical.Config{
			ConnString: db.URL, Sync: p.syncName, System: name, Tables: p.tables,
			SetReplicaIdentity: true, StatusInterval: 100 * time.Millisecond, Logger: p.logger,
		})
		require.NoError(t, err)
		t.Cleanup(src.Close)
		require.NoError(t, src.Setup(t.Context(), false))
		acfg := applypg.Config{Sync: p.syncName, Target: name, Logger: p.logger}
		if p.applyConfig != nil {
			p.applyConfig(&acfg)
		}
		app, err := applypg.New(t.Context(), db.Pool, acfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = app.DropOrigins(context.Background()) })
		var source duplex.ChangeSource = src
		if p.wrap != nil {
			source = p.wrap(src)
		}
		var applier duplex.Applier = app
		if p.applier != nil {
			applier = p.applier(name, app)
		}
		return duplex.Endpoint{Name: name, Source: source, Applier: applier}
	}
	var pf duplex.Preflight
	if p.preflight != nil {
		pf = p.preflight(p)
	}
	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name: p.syncName, A: endpoint("a", p.a), B: endpoint("b", p.b), Preflight: pf,
		Resolver: p.resolver, DeadLetters: p.dlq, Observer: p.events, Logger: p.logger,
		Onboarding: p.onboarding,
		Options:    duplex.Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
	})
	require.NoError(t, err)
	for id := 1; id <= p.seeded; id++ {
		res, err := s.Reconcile(t.Context(), customers, duplex.Key{{Name: "id", Value: int64(id)}})
		require.NoError(t, err)
		require.Equal(t, duplex.OutcomeUnchanged, res.Outcome, "seeded row %d: %s", id, res.Detail)
	}
	p.seeded = 0
	p.sync = s
	ctx, cancel := context.WithCancel(context.Background())
	p.stop, p.done, p.running, p.sync = cancel, make(chan error, 1), true, s
	go func() { p.done <- s.Run(ctx) }()
}

// halt stops the sync and waits for it.
func (p *pair) halt(t *testing.T) {
	t.Helper()
	if !p.running {
		return
	}
	p.running = false
	p.stop()
	select {
	case err := <-p.done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Error("sync did not stop within 30s")
	}
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	_, err := pool.Exec(t.Context(), sql, args...)
	require.NoError(t, err)
}

// waitQuiet waits until both directions have settled (applied, or found
// already there) at least want changes and nothing was settled for a moment.
func (p *pair) waitQuiet(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	last, since := -1, time.Now()
	for {
		n := p.events.settled()
		if n != last {
			last, since = n, time.Now()
		}
		if n >= want && time.Since(since) > 1500*time.Millisecond {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sync did not settle: %d changes settled, want at least %d", n, want)
		}
		select {
		case err := <-p.done:
			t.Fatalf("sync stopped: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func rowsOf(t *testing.T, pool *pgxpool.Pool) map[int64]string {
	t.Helper()
	return textRows(t, pool, `SELECT id, row(name, email, status, visits)::text FROM customers`)
}

// textRows runs query, which selects an id and a text, into a map.
func textRows(t *testing.T, pool *pgxpool.Pool, query string) map[int64]string {
	t.Helper()
	rows, err := pool.Query(t.Context(), query)
	require.NoError(t, err)
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var v string
		require.NoError(t, rows.Scan(&id, &v))
		out[id] = v
	}
	require.NoError(t, rows.Err())
	return out
}

// TestConcurrentEditsToDifferentFieldsMergeWithoutConflicts edits name on a
// and status on b for the same rows at the same time: every row ends with
// both edits on both sides, and no conflict is reported.
func TestConcurrentEditsToDifferentFieldsMergeWithoutConflicts(t *testing.T) {
	t.Parallel()
	const rows = 200
	p := startPair(t, rows, duplex.Chain(resolve.DeadLetterAll()))
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= rows; i++ {
			exec(t, p.a.Pool, `UPDATE customers SET name = $2 WHERE id = $1`, i, fmt.Sprintf("name-from-a-%d", i))
		}
	})
	wg.Go(func() {
		for i := rows; i >= 1; i-- {
			exec(t, p.b.Pool, `UPDATE customers SET status = 'status-from-b' WHERE id = $1`, i)
		}
	})
	wg.Wait()
	p.waitQuiet(t, 2*rows)
	a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
	require.Equal(t, a, b)
	for i := int64(1); i <= rows; i++ {
		require.Equal(t, fmt.Sprintf("(name-from-a-%d,e%d,status-from-b,0)", i, i), a[i])
	}
	_, conflicts := p.events.total()
	require.Zero(t, conflicts, "edits to different fields are not conflicts")
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Empty(t, entries)
}

// TestSameFieldEditsGoToTheResolverChain edits email on both sides of the
// same rows: field authority (a owns email) decides, from both directions,
// and the replicas converge on a's values. A counter merged by deltas adds
// both sides' increments.
func TestSameFieldEditsGoToTheResolverChain(t *testing.T) {
	t.Parallel()
	const rows = 50
	authority, err := resolve.ParseAuthority("customers.email=a,customers.status=b")
	require.NoError(t, err)
	p := startPair(t, rows, duplex.Chain(authority, resolve.CounterDelta("visits"), resolve.DeadLetterAll()))
	// Stop nothing: both sides write at once, so most rows conflict.
	var wg sync.WaitGroup
	for _, side := range []struct {
		pool *pgxpool.Pool
		name string
	}{{p.a.Pool, "a"}, {p.b.Pool, "b"}} {
		wg.Go(func() {
			for i := 1; i <= rows; i++ {
				exec(t, side.pool, `UPDATE customers SET email = $2, visits = visits + 1 WHERE id = $1`, i, "email-from-"+side.name)
			}
		})
	}
	wg.Wait()
	p.waitQuiet(t, rows)
	a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{Limit: 1000})
	require.NoError(t, err)
	require.Empty(t, entries, "authority and the counter merge decide every conflict")
	require.Equal(t, a, b)
	for i := int64(1); i <= rows; i++ {
		require.Equal(t, fmt.Sprintf("(n%d,email-from-a,new,2)", i), a[i], "row %d: a owns email; visits counts both increments", i)
	}
	_, conflicts := p.events.total()
	require.Positive(t, conflicts, "same-field edits went through the resolver chain")
}

// TestCheckViolationOnlyOnTheTargetDeadLettersThatChangeAlone: b has a
// CHECK constraint a lacks; the one row a accepts and b rejects goes to the
// DLQ with the database's error, every other change is applied.
func TestCheckViolationOnlyOnTheTargetDeadLettersThatChangeAlone(t *testing.T) {
	t.Parallel()
	p := startPair(t, 0, nil)
	exec(t, p.b.Pool, `ALTER TABLE customers ADD CONSTRAINT visits_small CHECK (visits < 1000)`)
	exec(t, p.a.Pool, `INSERT INTO customers (id, name, email, status, visits)
		SELECT i, 'n' || i, 'e' || i, 'new', CASE WHEN i = 77 THEN 5000 ELSE i END FROM generate_series(1, 300) i`)
	p.waitQuiet(t, 299)
	require.Len(t, rowsOf(t, p.b.Pool), 299)
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	e := entries[0]
	require.Equal(t, duplex.ReasonPermanentError, e.Reason)
	require.Equal(t, "id=77", e.Change.Key.String())
	require.Contains(t, e.Error, "visits_small")
	require.Equal(t, int64(5000), e.Change.After["visits"], "the payload is kept")
}

// TestStopAndRestartLosesNothing stops the sync while both sides are being
// written, writes more while it is down, and starts it again on the same
// slots and checkpoints: every change arrives exactly once.
func TestStopAndRestartLosesNothing(t *testing.T) {
	t.Parallel()
	p := startPair(t, 0, nil)
	write := func(db *testenv.DB, from, to int) {
		for i := from; i <= to; i++ {
			exec(t, db.Pool, `INSERT INTO customers (id, name, email, status) VALUES ($1, 'n', 'e', 's')`, i)
			exec(t, db.Pool, `UPDATE customers SET visits = visits + 1 WHERE id = $1`, i)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { write(p.a, 1, 150) })
	wg.Go(func() { write(p.b, 1001, 1150) })
	// Stop the sync mid-stream: once it has applied something, while the
	// writers still run.
	require.Eventually(t, func() bool { n, _ := p.events.total(); return n >= 50 }, 60*time.Second, 5*time.Millisecond)
	p.halt(t)
	wg.Wait()
	write(p.a, 151, 200) // while the sync is down
	write(p.b, 1151, 1200)
	p.start(t)
	p.waitQuiet(t, 1)
	a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
	require.Len(t, a, 400)
	require.Equal(t, a, b)
	for id, row := range a {
		require.Equal(t, "(n,e,s,1)", row, "row %d: each change applied exactly once", id)
	}
	// Every change that wrote its target is in the target's ledger once; an
	// insert merged together with its update (same chunk) writes once.
	for _, db := range []*testenv.DB{p.a, p.b} {
		var n, dup int
		require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT count(*), count(*) - count(DISTINCT change_id) FROM duplex.applied WHERE sync = $1`, p.syncName).Scan(&n, &dup))
		require.Zero(t, dup)
		require.GreaterOrEqual(t, n, 200)
		require.LessOrEqual(t, n, 400)
	}
}

// TestCrossingEditsEndTheSame plays, on two real databases synced by
// logical replication, edits made while the sync is down that value-based
// detection per direction got wrong (resolve/twoway_test.go has them all on
// memdb): a field going back to its old value on one side while the other
// changes it (ABA), counters incremented on both sides in several
// transactions, and a delete racing an edit that was undone. Both sides
// end equal, with the values the edits mean, and nothing dead-lettered.
func TestCrossingEditsEndTheSame(t *testing.T) {
	t.Parallel()
	p := startPair(t, 3, duplex.Chain(resolve.CounterDelta("visits"), resolve.DeadLetterAll()))
	p.halt(t)
	for _, e := range []struct {
		pool *pgxpool.Pool
		sql  string
	}{
		{p.b.Pool, `UPDATE customers SET name = 'r' WHERE id = 1`},
		{p.a.Pool, `UPDATE customers SET name = 'r' WHERE id = 1`},
		{p.a.Pool, `UPDATE customers SET name = 'n1' WHERE id = 1`}, // a: n1 -> r -> n1
		{p.a.Pool, `UPDATE customers SET visits = visits + 1 WHERE id = 2`},
		{p.b.Pool, `UPDATE customers SET visits = visits + 2 WHERE id = 2`},
		{p.a.Pool, `UPDATE customers SET visits = visits + 1 WHERE id = 2`},
		{p.a.Pool, `UPDATE customers SET visits = visits + 1 WHERE id = 2`},
		{p.b.Pool, `UPDATE customers SET name = 'q' WHERE id = 3`},
		{p.b.Pool, `UPDATE customers SET name = 'n3' WHERE id = 3`}, // b: n3 -> q -> n3
		{p.a.Pool, `DELETE FROM customers WHERE id = 3`},
	} {
		exec(t, e.pool, e.sql)
	}
	p.start(t)
	p.waitQuiet(t, 10)
	a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
	require.Equal(t, a, b)
	require.Equal(t, map[int64]string{1: "(r,e1,new,0)", 2: "(n2,e2,new,5)"}, a,
		"row 1: only b changed name in effect; row 2: 1+2+1+1 visits; row 3: deleted by a, b's edit undone")
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Empty(t, entries)
}
