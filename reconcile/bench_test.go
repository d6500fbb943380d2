package reconcile_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
	"github.com/duplexsync/duplex/reconcile"
	"github.com/duplexsync/duplex/resolve"
)

// statementTimes is a pgx tracer recording how long each statement took.
type statementTimes struct {
	mu    sync.Mutex
	start map[*pgx.Conn]time.Time
	times []time.Duration
}

func (s *statementTimes) TraceQueryStart(ctx context.Context, c *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.start[c] = time.Now()
	s.mu.Unlock()
	return ctx
}

func (s *statementTimes) TraceQueryEnd(_ context.Context, c *pgx.Conn, _ pgx.TraceQueryEndData) {
	s.mu.Lock()
	s.times = append(s.times, time.Since(s.start[c]))
	s.mu.Unlock()
}

func (s *statementTimes) reset() {
	s.mu.Lock()
	s.times = nil
	s.mu.Unlock()
}

func (s *statementTimes) summary() (n int, total, p50, max time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := slices.Clone(s.times)
	slices.Sort(ts)
	for _, d := range ts {
		total += d
	}
	if len(ts) == 0 {
		return 0, 0, 0, 0
	}
	return len(ts), total, ts[len(ts)/2], ts[len(ts)-1]
}

// benchSide is one database of the benchmark with a one-connection pool,
// so its one backend's CPU time can be read from /proc.
type benchSide struct {
	db    *testenv.DB
	pool  *pgxpool.Pool
	times *statementTimes
	pid   int
}

func newBenchSide(t *testing.T) *benchSide {
	db := testenv.Postgres(t)
	cfg, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	s := &benchSide{db: db, times: &statementTimes{start: map[*pgx.Conn]time.Time{}}}
	cfg.MaxConns = 1
	cfg.ConnConfig.Tracer = s.times
	s.pool, err = pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(s.pool.Close)
	require.NoError(t, s.pool.QueryRow(t.Context(), "SELECT pg_backend_pid()").Scan(&s.pid))
	return s
}

// cpu returns the CPU time the side's backend used so far (from
// /proc/<pid>/stat, in clock ticks of 10ms), or -1 when unreadable.
func (s *benchSide) cpu() time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(s.pid) + "/stat")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// stats reads the database's block and tuple counters.
func (s *benchSide) stats(t *testing.T) (blocks, tuples int64) {
	// The measured backend's own counters reach pg_stat_database when it
	// flushes them: ask it to, and read them in its next statement.
	_, err := s.pool.Exec(t.Context(), "SELECT pg_stat_force_next_flush()")
	require.NoError(t, err)
	require.NoError(t, s.pool.QueryRow(t.Context(), `SELECT blks_hit + blks_read, tup_returned + tup_fetched
		FROM pg_stat_database WHERE datname = current_database()`).Scan(&blocks, &tuples))
	return blocks, tuples
}

// TestParityBenchmark measures the parity check on 1,000,000 rows per side
// (DUPLEX_BENCH_ROWS changes it): wall time, statements and their longest
// duration (how long a snapshot is held), the CPU time of each side's
// backend, and blocks and tuples read per side; then the same check with a
// pause between ranges, and the reconciler's diff of the mismatched ranges.
//
//	DUPLEX_BENCH=1 go test -run '^TestParityBenchmark$' -v -timeout 30m ./reconcile/
func TestParityBenchmark(t *testing.T) {
	if os.Getenv("DUPLEX_BENCH") == "" {
		t.Skip("set DUPLEX_BENCH=1 to measure the parity check on 1,000,000 rows per side")
	}
	rows := 1_000_000
	if s := os.Getenv("DUPLEX_BENCH_ROWS"); s != "" {
		var err error
		rows, err = strconv.Atoi(s)
		require.NoError(t, err)
	}
	sides := []*benchSide{newBenchSide(t), newBenchSide(t)}
	setup := time.Now()
	var wg sync.WaitGroup
	for _, s := range sides {
		wg.Go(func() {
			ctx := context.Background()
			for _, q := range []string{customersDDL + `; ALTER TABLE customers ADD COLUMN balance numeric(12,2), ADD COLUMN note text`,
				`INSERT INTO customers (id, name, email, status, balance, note, updated_at)
					SELECT i, 'customer ' || i, 'c' || i || '@example.com', CASE WHEN i % 3 = 0 THEN 'paid' ELSE 'open' END,
						(i % 10000) / 100.0, repeat('x', i % 50), '2026-01-01'::timestamptz + make_interval(secs => i)
					FROM generate_series(1, $1) i`,
				`VACUUM ANALYZE customers`} {
				args := []any{}
				if strings.Contains(q, "$1") {
					args = append(args, rows)
				}
				if _, err := s.db.Pool.Exec(ctx, q, args...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	// Ten rows differ on B, spread over the key space.
	for i := 1; i <= 10; i++ {
		exec(t, sides[1].db.Pool, `UPDATE customers SET status = 'changed' WHERE id = $1`, int64(i)*int64(rows)/10-7)
	}
	t.Logf("setup: %d rows per side in %s", rows, time.Since(setup).Round(time.Millisecond))

	run := func(name string, pause time.Duration) *reconcile.Report {
		c, err := reconcile.NewChecker(sides[0].pool, sides[1].pool, reconcile.Config{
			Tables: []reconcile.TableConfig{{Table: customers}}, Pause: pause, RecheckDelay: 100 * time.Millisecond, Logger: logger(t),
		})
		require.NoError(t, err)
		var cpu0 [2]time.Duration
		var blocks0, tuples0 [2]int64
		for i, s := range sides {
			cpu0[i] = s.cpu()
			blocks0[i], tuples0[i] = s.stats(t)
			s.times.reset()
		}
		r, err := c.CheckTable(t.Context(), customers)
		require.NoError(t, err)
		require.Len(t, r.Mismatched, min(10, r.Ranges))
		require.Equal(t, int64(rows), r.RowsA)
		t.Logf("%s: %d rows per side, %d ranges, %d mismatched in %s (%.0f rows/s per side, recheck delay included)",
			name, r.RowsA, r.Ranges, len(r.Mismatched), r.Duration.Round(time.Millisecond), float64(rows)/r.Duration.Seconds())
		for i, s := range sides {
			n, total, p50, max := s.times.summary()
			blocks, tuples := s.stats(t)
			cpu := "unreadable"
			if c0, c1 := cpu0[i], s.cpu(); c0 >= 0 && c1 >= 0 {
				cpu = (c1 - c0).String()
			}
			t.Logf("  side %s: %d round trips (4 per range read: begin, settings, select, commit), busy %s (%.0f%% of the wall time), statement p50 %s max %s, backend cpu %s, blocks %d (%.1f MB), tuples %d",
				[]string{reconcile.SideA, reconcile.SideB}[i], n, total.Round(time.Millisecond), 100*total.Seconds()/r.Duration.Seconds(),
				p50.Round(time.Microsecond), max.Round(time.Microsecond), cpu,
				blocks-blocks0[i], float64(blocks-blocks0[i])*8192/1e6, tuples-tuples0[i])
			// (cpu and counters include the two statements reading them)
		}
		return r
	}
	r := run("check", 0)
	run("check with a 20ms pause between ranges", 20*time.Millisecond)

	c, err := reconcile.NewChecker(sides[0].pool, sides[1].pool, reconcile.Config{Tables: []reconcile.TableConfig{{Table: customers}}})
	require.NoError(t, err)
	var keys []string
	rec, err := reconcile.NewReconciler(c, reconcile.ReconcilerConfig{Repair: func(_ context.Context, _ duplex.Table, k duplex.Key) (duplex.ActionResult, error) {
		keys = append(keys, k.String())
		return duplex.ActionResult{Outcome: duplex.OutcomeUnchanged}, nil
	}})
	require.NoError(t, err)
	start := time.Now()
	rr, err := rec.Reconcile(t.Context(), r)
	require.NoError(t, err)
	require.Equal(t, 10, rr.Differing, "%v", keys)
	t.Logf("diff of %d mismatched ranges: %d keys found in %s", rr.Ranges, rr.Differing, time.Since(start).Round(time.Millisecond))
}

// TestReconcileThroughput measures repairs through Sync.Reconcile (two
// lookups, resolvers, compare-and-set writes to both sides) on a running
// two-way sync whose sides disagree on every row, one key at a time and
// four at a time. DUPLEX_BENCH_KEYS (5000) changes the size.
//
//	DUPLEX_BENCH=1 go test -run '^TestReconcileThroughput$' -v ./reconcile/
func TestReconcileThroughput(t *testing.T) {
	if os.Getenv("DUPLEX_BENCH") == "" {
		t.Skip("set DUPLEX_BENCH=1 to measure the reconciler's repairs")
	}
	keys := 5000
	if s := os.Getenv("DUPLEX_BENCH_KEYS"); s != "" {
		var err error
		keys, err = strconv.Atoi(s)
		require.NoError(t, err)
	}
	for _, conc := range []int{1, 4} {
		authority, err := resolve.ParseAuthority("customers.name=a,customers.email=a,customers.status=b")
		require.NoError(t, err)
		seed := `INSERT INTO customers (id, name, email, status) SELECT i, 'crm ' || i, 'e' || i, 'lead' FROM generate_series(1, ` + strconv.Itoa(keys) + `) i`
		p := startPair(t, duplex.Chain(authority), seed, strings.ReplaceAll(strings.ReplaceAll(seed, "'crm '", "'billing '"), "'lead'", "'paid'"))
		c, err := reconcile.NewChecker(p.a.Pool, p.b.Pool, reconcile.Config{Tables: []reconcile.TableConfig{{Table: customers}}, RecheckDelay: -1, Logger: logger(t)})
		require.NoError(t, err)
		r, err := c.CheckTable(t.Context(), customers)
		require.NoError(t, err)
		rec, err := reconcile.NewReconciler(c, reconcile.ReconcilerConfig{Repair: p.sync.Reconcile, Concurrency: conc, Logger: logger(t)})
		require.NoError(t, err)
		rr, err := rec.Reconcile(t.Context(), r)
		require.NoError(t, err)
		require.Equal(t, keys, rr.Outcomes[duplex.OutcomeMerged])
		t.Logf("concurrency %d: %d keys repaired (merged: name from a, status from b, written to both sides) in %s: %.0f keys/s",
			conc, rr.Differing, rr.Duration.Round(time.Millisecond), float64(rr.Differing)/rr.Duration.Seconds())
		r, err = c.CheckTable(t.Context(), customers)
		require.NoError(t, err)
		require.True(t, r.Clean())
	}
}
