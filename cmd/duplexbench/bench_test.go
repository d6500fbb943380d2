package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/testenv"
)

// TestMain runs the tests, or, re-executed by startSync with
// DUPLEX_BENCH_TEST_ROLE=sync, the sync process.
func TestMain(m *testing.M) {
	if os.Getenv("DUPLEX_BENCH_TEST_ROLE") == "sync" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bench sync:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	childArgs = []string{"-test.run=^$"}
	os.Setenv("DUPLEX_BENCH_TEST_ROLE", "sync") // inherited by the children only: this process checked it above
	dir, err := os.MkdirTemp("", "duplex-bench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pgbisyncDir = dir
	goleak.VerifyTestMain(testenv.RemoveAfter(m, dir))
}

// pgbisyncDir holds the pgbisync binary the tests build.
var pgbisyncDir string

func TestSummarize(t *testing.T) {
	t.Parallel()
	require.Equal(t, summary{Median: 2, Min: 1, Max: 9, N: 3}, summarize([]float64{9, 1, 2}))
	require.Equal(t, summary{Median: 2.5, Min: 1, Max: 4, N: 4}, summarize([]float64{4, 3, 2, 1}))
	require.Equal(t, summary{}, summarize(nil))
	in := []float64{3, 1, 2}
	summarize(in)
	require.Equal(t, []float64{3, 1, 2}, in, "summarize must not reorder its input")
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	vs := []float64{5, 1, 4, 2, 3}
	require.InDelta(t, 3, percentile(vs, 0.5), 1e-9)
	require.InDelta(t, 4.96, percentile(vs, 0.99), 1e-9)
	require.InDelta(t, 1, percentile(vs, 0), 1e-9)
	require.InDelta(t, 5, percentile(vs, 1), 1e-9)
	require.Zero(t, percentile(nil, 0.5))
	require.Equal(t, []float64{5, 1, 4, 2, 3}, vs, "percentile must not reorder its input")
}

func TestOutcomeMetrics(t *testing.T) {
	t.Parallel()
	m := outcome{Total: 4 * time.Second, Write: time.Second, Rows: 1000, Arrived: 1000}.metrics("rows_s")
	require.Equal(t, map[string]float64{"rows_s": 250, "write_rows_s": 1000, "secs": 4}, m)
	m = outcome{Total: 10 * time.Second, Write: time.Second, Rows: 1000, Arrived: 400, Incomplete: true}.metrics("tx_s")
	require.Equal(t, map[string]float64{"tx_s": 40, "write_tx_s": 1000, "secs": 10, "incomplete": 1}, m)
}

func TestParseStatCPU(t *testing.T) {
	t.Parallel()
	// A command name with spaces and a parenthesis, as postgres backends
	// can have; utime=1234 stime=56 (fields 14 and 15).
	stat := "4242 (postgres: wal (sender)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 1 0 100 1000 10"
	ticks, err := parseStatCPU(stat)
	require.NoError(t, err)
	require.Equal(t, int64(1290), ticks)

	_, err = parseStatCPU("4242 (x) S 1 2")
	require.ErrorContains(t, err, "fields after the command name")
	_, err = parseStatCPU("no command")
	require.Error(t, err)
}

func TestParseStatusKB(t *testing.T) {
	t.Parallel()
	status := "Name:\tbench\nVmPeak:\t  200000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 40000 kB\n"
	kb, err := parseStatusKB(status, "VmHWM")
	require.NoError(t, err)
	require.Equal(t, int64(51234), kb)
	_, err = parseStatusKB(status, "VmSwap")
	require.ErrorContains(t, err, "VmSwap")
}

func TestProcCPUOfSelf(t *testing.T) {
	t.Parallel()
	before, err := procCPU(os.Getpid())
	require.NoError(t, err)
	// Burn CPU until the kernel has counted at least one more tick.
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			x += i
		}
		now, err := procCPU(os.Getpid())
		require.NoError(t, err)
		if now > before {
			s := cpuSeconds(cpuSnapshot{os.Getpid(): before}, cpuSnapshot{os.Getpid(): now})
			require.InDelta(t, float64(now-before)/clockTicks, s, 1e-9)
			return
		}
	}
	t.Fatalf("no CPU time counted after 10s of work (%d)", x)
}

func TestProcPeakRSSOfSelf(t *testing.T) {
	t.Parallel()
	kb, err := procPeakRSS(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, kb)
}

func TestCursorWraps(t *testing.T) {
	t.Parallel()
	c := &cursor{lo: 10, hi: 25, at: 10}
	var got [][2]int64
	for range 4 {
		from, to := c.next(6)
		got = append(got, [2]int64{from, to})
	}
	require.Equal(t, [][2]int64{{10, 16}, {16, 22}, {22, 25}, {10, 16}}, got)
}

func TestFamily(t *testing.T) {
	t.Parallel()
	require.Equal(t, "steady", family("steady 2000 rows/s"))
	require.Equal(t, "catchup", family("catchup"))
	_, err := parseLoads("2000, 5000")
	require.NoError(t, err)
	_, err = parseLoads("2000,fast")
	require.ErrorContains(t, err, "fast")
}

// TestNativePairLeavesNothing replays a held backlog and runs a short
// steady load through native logical replication between two benchmark
// databases, checks the lag
// markers (the arrived default is filled by the apply), and that dropping
// the pair leaves no database, slot, subscription or publication behind.
func TestNativePairLeavesNothing(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	ctx := t.Context()
	c, err := newCluster(ctx, db.URL)
	require.NoError(t, err)
	t.Cleanup(c.admin.Close)
	name := dbPrefix + strings.TrimPrefix(testenv.UniqueName(t, "pair"), "duplex_t_")
	t.Cleanup(func() { require.NoError(t, c.dropLive()) })
	p, err := c.newPair(ctx, name, itemsData, 1000)
	require.NoError(t, err)
	require.NoError(t, c.startNative(ctx, p, true))
	// Held: a backlog of single-row transactions, then the release.
	o, err := backlog(ctx, p, 1000, 200, 2, time.Minute)
	require.NoError(t, err)
	require.False(t, o.Incomplete)
	require.Equal(t, int64(200), o.Arrived)
	require.NoError(t, ready(ctx, p, false))
	ws, aps, err := c.nativePIDs(ctx, p)
	require.NoError(t, err)
	require.Len(t, ws, 1, "one walsender for the native slot")
	require.Len(t, aps, 1, "one apply worker for the subscription")

	rs, err := steady(ctx, p, 1000, 500, 500*time.Millisecond, false, time.Minute)
	require.NoError(t, err)
	require.Len(t, rs, 1)
	require.Positive(t, rs[0].Markers)
	require.False(t, rs[0].Behind)
	require.Positive(t, rs[0].P50)
	require.GreaterOrEqual(t, rs[0].P99, rs[0].P50)
	require.NoError(t, waitSum(ctx, p, p.poolA, p.poolB, time.Minute))

	require.NoError(t, c.dropPair(ctx, p))
	var left int
	require.NoError(t, c.admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_database WHERE datname IN ($1, $2))
		+ (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $3)
		+ (SELECT count(*) FROM pg_subscription WHERE subname = $3)`, p.a, p.b, p.nativeSlot()).Scan(&left))
	require.Zero(t, left)
}

// TestLateralLedgerAgrees checks the diagnostic ledger query against the
// Applier's own: both must give the same answers.
func TestLateralLedgerAgrees(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	sync := testenv.UniqueName(t, "ledger")
	app, err := applypg.New(ctx, db.Pool, applypg.Config{Sync: sync, Target: "b"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = app.DropOrigins(context.Background()) })
	_, err = db.Pool.Exec(ctx, "INSERT INTO "+pgstate.Names(pgstate.DefaultSchema).Applied+
		" (sync, target, change_id) VALUES ($1, 'b', 'x1'), ($1, 'b', 'x3'), ($1, 'a', 'x2'), ('other', 'b', 'x2')", sync)
	require.NoError(t, err)
	ids := []string{"x1", "x2", "x3", "x4", "x1"}
	want, err := app.Applied(ctx, ids)
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, true, false, true}, want)
	got, err := newLateralLedger(app, db.Pool, sync, "b").Applied(ctx, ids)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

// TestDuplexPairLeavesNothing runs the duplex sync process (this test
// binary re-executed) one way between two benchmark databases through a
// catch-up and a short steady load with the wall-clock sampler on, then
// checks that stopping it and dropping the pair leaves no database, slot,
// publication or replication origin behind.
func TestDuplexPairLeavesNothing(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	ctx := t.Context()
	c, err := newCluster(ctx, db.URL)
	require.NoError(t, err)
	t.Cleanup(c.admin.Close)
	name := dbPrefix + strings.TrimPrefix(testenv.UniqueName(t, "dup"), "duplex_t_")
	t.Cleanup(func() { require.NoError(t, c.dropLive()) })
	p, err := c.newPair(ctx, name, itemsData, 2000)
	require.NoError(t, err)
	proc, err := startSync(ctx, childConfig{Sync: name,
		AURL: c.dbURL(p.a, map[string]string{"application_name": syncAppName}),
		BURL: c.dbURL(p.b, map[string]string{"application_name": syncAppName})})
	require.NoError(t, err)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_, _ = proc.stop()
		}
	})
	require.NoError(t, ready(ctx, p, false))

	o, err := catchUp(ctx, p, 2000, 3000, 500, time.Minute)
	require.NoError(t, err)
	require.False(t, o.Incomplete)
	require.Equal(t, int64(3000), o.Arrived)

	smp := &sampler{}
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		smp.run(sctx, c, p, []string{syncAppName})
	}()
	rs, err := steady(ctx, p, 2000, 1000, 500*time.Millisecond, false, time.Minute)
	stopSampling()
	<-sampled
	require.NoError(t, err)
	require.Positive(t, rs[0].Markers)
	require.False(t, rs[0].Behind)
	require.Positive(t, smp.samples)
	require.Contains(t, smp.top(5), "wall-clock samples")

	kb, err := procPeakRSS(proc.pid())
	require.NoError(t, err)
	require.Positive(t, kb)
	res, err := proc.stop()
	stopped = true
	require.NoError(t, err)
	require.Zero(t, res.DeadLetters)

	require.NoError(t, c.dropPair(ctx, p))
	var left int
	require.NoError(t, c.admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_database WHERE datname IN ($1, $2))
		+ (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $3)
		+ (SELECT count(*) FROM pg_replication_origin WHERE roname LIKE $4)`, p.a, p.b, "%"+name+"%", "duplex:"+name+"%").Scan(&left))
	require.Zero(t, left)
}

// TestTwoWayWorkloadsSmoke runs the two-way mode's workloads at a tiny
// size through runOnce: bi-catchup with native and with the real pgbisync
// binary (started, stopped, restarted for the catch-up; a CPU profile
// written), bi-pgbench, bi-twoway and bi-contention (dead letters allowed,
// the rows compared after convergence) with pgbisync, and checks that
// every run left no database, slot or replication origin behind.
func TestTwoWayWorkloadsSmoke(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, bin := pgbisyncCluster(t)
	var err error
	runID := strings.TrimPrefix(testenv.UniqueName(t, "bi"), "duplex_t_")
	b := &bench{o: options{profile: t.TempDir()}, c: c, runID: runID, pgbisync: bin}
	z := sizes{seed: 500, updates: 1000, txRows: 100, big: 2000, biSmall: 200, biClients: 4, biRate: 500,
		contKeys: 50, contRate: 200, biSteady: time.Second}
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		pgbench = "" // Go writers
	}
	ws := map[string]workload{}
	for _, w := range twoWayWorkloads(z, time.Minute, pgbench) {
		ws[w.name] = w
	}
	require.Len(t, ws, len(twoWayFamilies))
	for _, run := range []struct{ workload, variant string }{
		{"bi-catchup", native}, {"bi-catchup", pgbisyncV}, {"bi-pgbench", pgbisyncV},
		{"bi-twoway", pgbisyncV}, {"bi-contention", pgbisyncV},
	} {
		m, err := b.runOnce(ctx, ws[run.workload], run.variant, 0)
		require.NoError(t, err, "%s / %s", run.workload, run.variant)
		t.Logf("%s / %s: %s", run.workload, run.variant, formatRun(m))
		require.Zero(t, m["incomplete"], "%s / %s", run.workload, run.variant)
		if run.variant == pgbisyncV {
			require.Positive(t, m["rss_mb"])
			require.Contains(t, m, "dlq")
		}
	}
	profiles, err := filepath.Glob(filepath.Join(b.o.profile, "bi-catchup_pgbisync_1.pprof"))
	require.NoError(t, err)
	require.Len(t, profiles, 1)
	st, err := os.Stat(profiles[0])
	require.NoError(t, err)
	require.Positive(t, st.Size(), "pgbisync -cpu-profile wrote nothing")
	requireNothingLeft(t, c, dbPrefix+runID)
}

// TestKilledPgbisyncLeavesNothing kills pgbisync (SIGKILL: no clean exit)
// and checks that dropping the pair still removes its slots, databases
// and replication origins.
func TestKilledPgbisyncLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, bin := pgbisyncCluster(t)
	name := dbPrefix + strings.TrimPrefix(testenv.UniqueName(t, "kill"), "duplex_t_")
	p, err := c.newPair(ctx, name, customersData, 100)
	require.NoError(t, err)
	proc, err := startPgbisync(ctx, c, bin, p, "", false)
	require.NoError(t, err)
	require.NoError(t, ready(ctx, p, true))
	var origins int
	require.NoError(t, c.admin.QueryRow(ctx, `SELECT count(*) FROM pg_replication_origin WHERE starts_with(roname, $1)`, "duplex:"+name+":").Scan(&origins))
	require.Positive(t, origins, "pgbisync names its origins duplex:<name>:<side>")
	require.NoError(t, proc.cmd.Process.Kill())
	require.Error(t, proc.terminate(), "a killed pgbisync reports its exit")
	require.NoError(t, c.dropPair(ctx, p))
	requireNothingLeft(t, c, name)
}

// pgbisyncBinary builds examples/pgbisync once for the test run.
var pgbisyncBinary = sync.OnceValues(func() (string, error) {
	return buildPgbisync(context.Background(), pgbisyncDir)
})

// pgbisyncCluster returns the test server as the benchmark's cluster
// (wal_level logical; every pair left is dropped at the end) and the
// pgbisync binary.
func pgbisyncCluster(t *testing.T) (*cluster, string) {
	t.Helper()
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	c, err := newCluster(t.Context(), db.URL)
	require.NoError(t, err)
	t.Cleanup(c.admin.Close)
	t.Cleanup(func() { require.NoError(t, c.dropLive()) })
	bin, err := pgbisyncBinary()
	require.NoError(t, err)
	return c, bin
}

// requireNothingLeft fails when a database, replication slot or
// replication origin named after prefix exists.
func requireNothingLeft(t *testing.T, c *cluster, prefix string) {
	t.Helper()
	var left int
	require.NoError(t, c.admin.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM pg_database WHERE starts_with(datname, $1))
		+ (SELECT count(*) FROM pg_replication_slots WHERE strpos(slot_name, $1) > 0)
		+ (SELECT count(*) FROM pg_replication_origin WHERE starts_with(roname, 'duplex:' || $1))`, prefix).Scan(&left))
	require.Zero(t, left, "objects of %s left behind", prefix)
}
