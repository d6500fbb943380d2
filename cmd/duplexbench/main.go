// Command duplexbench measures duplex against PostgreSQL's native logical
// replication on the local server: for each workload it alternates runs of
// the systems compared (A B A B ...), each on two fresh databases, and
// prints the medians with their spread and the ratio duplex/native.
//
//	go run ./cmd/duplexbench -quick          # smoke test, about 3 minutes
//	go run ./cmd/duplexbench -out section.md # the full run (its length is printed first)
//
// Workloads (-only):
//
//	catchup  100,000 seeded rows, 200,000 updates in 1,000-row transactions
//	         written as fast as one client can; time from the first write
//	         until the target has them all (rows/s)
//	smalltx  50,000 single-row update transactions from 8 clients (tx/s)
//	backlog  the same 50,000 transactions written while the replication is
//	         held, then the time from its release until the target has them
//	         all: the replication's own rate, whatever the writers' speed
//	steady   offered load of each -loads rows/s for -steady; p50/p99 lag of
//	         marker rows (source clock_timestamp() to the target's
//	         arrived DEFAULT clock_timestamp())
//	twoway   the same offered load on both sides at once (duplex only:
//	         native replication cannot do this on PostgreSQL 15)
//	bigtx    one 1,000,000-row transaction: time, and the sync's peak RSS
//	onboard  200,000 rows on a, b's table empty: native logical
//	         replication's initial copy (copy_data = true) against duplex's
//	         onboarding (Sync.Onboard, in this process), rows/s
//	compare  200,000 equal rows on both sides: onboarding (compare, record
//	         as agreed) rows/s, then Sync.ReconcileTables keys/s
//	redis    catchup with and without Redis dedup (duplex against duplex)
//	aa       catchup of duplex against itself: the noise floor
//	aa-native  the same for native replication
//
// Two-way mode (-mode twoway, or -only with these names; issue 18): the
// real examples/pgbisync binary (built once per invocation, default flags)
// against native logical replication, alternating, on a customers table
// (100,000 rows seeded identically; updates set updated_at = now()):
//
//	bi-catchup     200,000 updates in 1,000-row transactions written while
//	               the sync is stopped, then the time from its (re)start
//	               until B has them all (rows/s)
//	bi-pgbench     20,000 one-row update transactions from 4 pgbench
//	               clients, written while stopped; the same clock (tx/s)
//	bi-steady      5,000 rows/s offered on A for -steady (default 20 s in
//	               this mode): marker lag p50/p99
//	bi-twoway      5,000 rows/s on both sides at once, disjoint keys
//	               (pgbisync only): lag p50/p99 both ways
//	bi-contention  both sides update the same 1,000 keys at 1,000 rows/s
//	               each (pgbisync only): throughput, dead letters, time to
//	               converge, and no row differing outside the DLQ
//	bi-bigtx       one 1,000,000-row insert transaction: time to B, and
//	               pgbisync's peak RSS
//
// The duplex sync runs in a child process (this binary with -role=sync),
// so its peak RSS (VmHWM) and CPU time are its own; the CPU time of the
// walsenders and apply backends is read from /proc/<pid>/stat of the
// server processes. Every run uses databases named duplex_bench_* and drops
// them, their slots, subscriptions, publications and replication origins
// afterwards (also on error or SIGINT); -cleanup removes leftovers of a
// killed run. -profile writes a CPU profile of every sync process; -sample
// prints where the sync's server backends spent each run; -lateral-ledger
// runs duplex with the ledger-query fix of ledgerfix.go (a diagnostic).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	pg, redis string
	quick     bool
	runs      int
	only      string
	loads     string
	steady    time.Duration
	out       string
	profile   string
	cleanup   bool
	verbose   bool
	role      string
	lateral   bool
	timeout   time.Duration
	sample    bool
	mode      string
	pgbisync  string
	pgbench   string
	// steadySet: -steady was given (else two-way mode uses biSteady).
	steadySet bool
}

// sizes are a workload run's dimensions.
type sizes struct {
	seed, updates, txRows, small, clients, big, onboard int
	loads                                               []int
	steady                                              time.Duration
	// The two-way workloads': single-row transactions and their clients
	// (bi-pgbench), the offered load of bi-steady and bi-twoway, the keys
	// and per-side load of bi-contention, and their steady phases.
	biSmall, biClients, biRate, contKeys, contRate int
	biSteady                                       time.Duration
}

func main() {
	var o options
	def := os.Getenv("DUPLEX_TEST_POSTGRES_URL")
	if def == "" {
		def = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	flag.StringVar(&o.pg, "pg", def, "PostgreSQL server (any database, a superuser); databases duplex_bench_* are created and dropped")
	flag.StringVar(&o.redis, "redis", "redis://127.0.0.1:6379/0", "Redis for the redis workload")
	flag.BoolVar(&o.quick, "quick", false, "small sizes, 1 run, 10 s steady phases: a smoke test")
	flag.IntVar(&o.runs, "runs", 3, "runs of each system per workload (alternated)")
	flag.StringVar(&o.only, "only", "", "comma-separated workloads to run, of either mode (catchup,smalltx,backlog,steady,twoway,bigtx,onboard,compare,redis,ledger,aa,aa-native; bi-catchup,bi-pgbench,bi-steady,bi-twoway,bi-contention,bi-bigtx); empty: those of -mode")
	flag.StringVar(&o.loads, "loads", "2000,5000,10000,20000", "offered loads (rows/s) of steady and twoway")
	flag.DurationVar(&o.steady, "steady", 60*time.Second, "length of each steady phase (two-way mode: 20 s unless given)")
	flag.StringVar(&o.out, "out", "", "write the results as a Markdown section (for BENCHMARKS.md) to this file")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of every sync process (duplex's, and pgbisync via its -cpu-profile) into this directory")
	flag.BoolVar(&o.cleanup, "cleanup", false, "drop what killed benchmark runs left behind (duplex_bench_* databases, slots, subscriptions, origins) and exit")
	flag.BoolVar(&o.verbose, "v", false, "show the sync process's logs")
	flag.BoolVar(&o.lateral, "lateral-ledger", false, "diagnostic: run every duplex sync with the benchmark's rewrite of the ledger query (see ledgerfix.go), to measure what the fix gains")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "how long a run waits for the target to catch up before it counts as failed")
	flag.BoolVar(&o.sample, "sample", false, "print, for every duplex run, where its server backends spent the measured phase (pg_stat_activity sampled every 10 ms)")
	flag.StringVar(&o.mode, "mode", modeOneWay, "which workloads run when -only is empty: oneway (the duplex Pipeline and two-way Sync in-process against native), twoway (the pgbisync binary against native, issue 18: bi-*) or all")
	flag.StringVar(&o.pgbisync, "pgbisync", "", "the pgbisync binary of the two-way mode; empty: go build ./examples/pgbisync into a temporary directory once per invocation")
	flag.StringVar(&o.pgbench, "pgbench", "pgbench", "the pgbench of bi-pgbench; when it cannot be found, Go writers send the same transactions")
	flag.StringVar(&o.role, "role", "", "internal: -role=sync runs the sync process")
	flag.Parse()
	flag.Visit(func(f *flag.Flag) { o.steadySet = o.steadySet || f.Name == "steady" })
	if o.role == "sync" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bench sync:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// variant names.
const (
	native      = "native"
	duplexOne   = "duplex"
	duplexAgain = "duplex (again)"
	duplexRedis = "duplex+redis"
	duplexTwo   = "duplex two-way"
	duplexFix   = "duplex+lateral ledger"
	nativeAgain = "native (again)"
	pgbisyncV   = "pgbisync"
)

// Modes (-mode): the workload sets that run when -only is empty.
const (
	modeOneWay = "oneway"
	modeTwoWay = "twoway"
	modeAll    = "all"
)

// workload is one measurement, run for each of its variants.
type workload struct {
	name     string
	variants []string // baseline first
	seed     int
	// estimate is the expected length of one run, for the announcement.
	estimate time.Duration
	body     func(ctx context.Context, p *pair, variant string) (map[string]float64, error)
	// held starts the replication held: the body releases it (p.release).
	held bool
	// data is the tables of the run's databases (nil: itemsData).
	data *dataset
	// mode is the workload set it belongs to (modeOneWay or modeTwoWay).
	mode string
	// twoSided: the load writes on both sides (the start-up check waits
	// for markers both ways).
	twoSided bool
	// conflicts: the load makes conflicts, so dead letters are reported
	// rather than voiding the run.
	conflicts bool
	// self: the body sets up what it measures (no sync process, no native
	// subscription is started for it).
	self bool
	// metrics lists what the table shows: key, label, whether higher is
	// better, and the target text.
	metrics []metric
}

// metric is one row of the results table: the measurement's key, its
// label, whether higher is better, and the goal as text.
type metric struct {
	key, label string
	higher     bool
	target     string
	// met says whether the goal holds for the candidate's median v and
	// the ratio r (oriented so that r > 1 means the candidate is better;
	// NaN without a baseline). nil: the table gives no verdict.
	met func(v, r float64) bool
}

func parseLoads(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-loads: %q is not a positive number of rows/s", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// workloads returns every workload of both modes at sizes z; pgbench is
// bi-pgbench's writer ("" : Go writers).
func workloads(c *cluster, z sizes, timeout time.Duration, pgbench string) []workload {
	catch := func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
		o, err := catchUp(ctx, p, z.seed, z.updates, z.txRows, timeout)
		if err != nil {
			return nil, err
		}
		return o.metrics("rows_s"), nil
	}
	catchMetrics := []metric{{"rows_s", "rows/s", true, "", nil}, {"write_rows_s", "source write rows/s", true, "", nil}}
	catchEst := 8*time.Second + time.Duration(z.updates/15)*time.Millisecond
	ws := []workload{
		{name: "catchup", variants: []string{native, duplexOne}, seed: z.seed, estimate: catchEst, body: catch,
			metrics: []metric{{"rows_s", "rows/s", true, ">= 1.5x native", nil}, {"write_rows_s", "source write rows/s", true, "", nil}}},
		{name: "smalltx", variants: []string{native, duplexOne}, seed: z.seed, estimate: 8*time.Second + time.Duration(z.small/3)*time.Millisecond,
			body: func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
				o, err := smallTx(ctx, p, z.seed, z.small, z.clients, timeout)
				if err != nil {
					return nil, err
				}
				return o.metrics("tx_s"), nil
			},
			metrics: []metric{{"tx_s", "tx/s (1 row each)", true, ">= 1.5x native", nil}, {"write_tx_s", "source write tx/s", true, "", nil}}},
		{name: "backlog", variants: []string{native, duplexOne}, seed: z.seed, held: true, estimate: 10*time.Second + time.Duration(z.small/3)*time.Millisecond,
			body: func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
				o, err := backlog(ctx, p, z.seed, z.small, z.clients, timeout)
				if err != nil {
					return nil, err
				}
				return o.metrics("tx_s"), nil
			},
			metrics: []metric{{"tx_s", "tx/s (1 row each) from a backlog", true, ">= 1.5x native", nil}}},
	}
	for _, two := range []bool{false, true} {
		for _, rate := range z.loads {
			name, variants := fmt.Sprintf("steady %d rows/s", rate), []string{native, duplexOne}
			target := ""
			switch rate {
			case 5000:
				target = "p99 <= 10 ms"
			case 20000:
				target = "p99 <= 2x native"
			}
			ms := []metric{{"p50", "lag p50 ms", false, "", nil}, {"p99", "lag p99 ms", false, target, nil}, {"achieved", "achieved rows/s", true, "", nil}}
			if two {
				name, variants = fmt.Sprintf("twoway %d rows/s each side", rate), []string{duplexTwo}
				ms = []metric{{"p50", "a->b lag p50 ms", false, "", nil}, {"p99", "a->b lag p99 ms", false, "", nil},
					{"p50_ba", "b->a lag p50 ms", false, "", nil}, {"p99_ba", "b->a lag p99 ms", false, "", nil}, {"achieved", "achieved rows/s (a)", true, "", nil}}
			}
			ws = append(ws, workload{name: name, variants: variants, seed: z.seed, estimate: z.steady + 10*time.Second, metrics: ms,
				body: func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
					rs, err := steady(ctx, p, z.seed, rate, z.steady, two, timeout)
					if err != nil {
						return nil, err
					}
					return steadyMetrics(rs), nil
				}})
		}
	}
	ws = append(ws,
		workload{name: "bigtx", variants: []string{native, duplexOne}, seed: 1000, estimate: 10*time.Second + time.Duration(z.big/20)*time.Millisecond,
			body: func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
				o, err := bigTx(ctx, p, z.big, timeout)
				if err != nil {
					return nil, err
				}
				m := o.metrics("rows_s")
				m["write_secs"] = o.Write.Seconds()
				return m, nil
			},
			metrics: []metric{{"secs", fmt.Sprintf("%d-row tx, s to target", z.big), false, "", nil}, {"rows_s", "rows/s", true, "", nil}, {"write_secs", "source write s", false, "", nil},
				{"rss_mb", "sync peak RSS MB", false, "< 150 MB", nil}}},
		workload{name: "redis", variants: []string{duplexOne, duplexRedis}, seed: z.seed, estimate: catchEst, body: catch,
			metrics: []metric{{"rows_s", "catch-up rows/s", true, "overhead <= 10%", nil}}},
		workload{name: "ledger", variants: []string{duplexOne, duplexFix}, seed: z.seed, estimate: catchEst, body: catch,
			metrics: []metric{{"rows_s", "catch-up rows/s (diagnostic)", true, "", nil}}},
		workload{name: "onboard", variants: []string{native, duplexOne}, self: true, estimate: 10*time.Second + time.Duration(z.onboard/10)*time.Millisecond,
			body: func(ctx context.Context, p *pair, v string) (map[string]float64, error) {
				if err := seedA(ctx, p, z.onboard); err != nil {
					return nil, err
				}
				if v == native {
					return nativeCopy(ctx, c, p, z.onboard, timeout)
				}
				return onboardRun(ctx, c, p, z.onboard, false)
			},
			metrics: []metric{{"secs", fmt.Sprintf("%d rows into an empty side, s", z.onboard), false, "", nil}, {"rows_s", "rows/s", true, ">= 1.0x native copy_data", nil}}},
		workload{name: "compare", variants: []string{duplexOne}, self: true, seed: z.onboard, estimate: 10*time.Second + time.Duration(z.onboard/20)*time.Millisecond,
			body: func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
				return onboardRun(ctx, c, p, z.onboard, true)
			},
			metrics: []metric{{"rows_s", fmt.Sprintf("onboarding %d equal rows on both sides, rows/s", z.onboard), true, ">= 100,000", nil},
				{"reconcile_keys_s", "ReconcileTables compare, keys/s", true, ">= 20,000", nil}}},
		workload{name: "aa", variants: []string{duplexOne, duplexAgain}, seed: z.seed, estimate: catchEst, body: catch, metrics: catchMetrics[:1]},
		workload{name: "aa-native", variants: []string{native, nativeAgain}, seed: z.seed, estimate: catchEst, body: catch, metrics: catchMetrics[:1]},
	)
	ws = append(ws, twoWayWorkloads(z, timeout, pgbench)...)
	for i := range ws {
		ws[i].name = strings.TrimSpace(ws[i].name)
		if ws[i].mode == "" {
			ws[i].mode = modeOneWay
		}
	}
	return ws
}

// steadyMetrics returns a steady load's measurements: the a -> b lag
// p50/p99/max and achieved rate, and with a second flow its b -> a lag
// and rate.
func steadyMetrics(rs []steadyResult) map[string]float64 {
	m := map[string]float64{"p50": rs[0].P50, "p99": rs[0].P99, "max": rs[0].Max, "achieved": rs[0].Achieved}
	if len(rs) > 1 {
		m["p50_ba"], m["p99_ba"], m["achieved_ba"] = rs[1].P50, rs[1].P99, rs[1].Achieved
	}
	for _, r := range rs {
		if r.Behind {
			m["incomplete"] = 1
		}
	}
	return m
}

// family returns the -only name of a workload ("steady 2000 rows/s" ->
// "steady").
func family(name string) string {
	f, _, _ := strings.Cut(name, " ")
	return f
}

// bench is one benchmark invocation.
type bench struct {
	o     options
	c     *cluster
	runID string
	seq   int
	// pgbisync is the pgbisync binary of the two-way variant.
	pgbisync string
}

func run(ctx context.Context, o options) error {
	c, err := newCluster(ctx, o.pg)
	if err != nil {
		return err
	}
	defer c.admin.Close()
	if o.cleanup {
		n, err := c.cleanupAll(ctx)
		fmt.Printf("cleanup: %d duplex_bench_* databases dropped\n", n)
		return err
	}
	z := sizes{seed: 100000, updates: 200000, txRows: 1000, small: 50000, clients: 8, big: 1000000, onboard: 200000, steady: o.steady,
		biSmall: 20000, biClients: 4, biRate: 5000, contKeys: 1000, contRate: 1000, biSteady: 20 * time.Second}
	if o.quick {
		z = sizes{seed: 10000, updates: 20000, txRows: 1000, small: 5000, clients: 8, big: 50000, onboard: 20000, steady: 10 * time.Second,
			biSmall: 2000, biClients: 4, biRate: 5000, contKeys: 1000, contRate: 1000, biSteady: 10 * time.Second}
		o.runs = 1
		if o.loads == "2000,5000,10000,20000" {
			o.loads = "2000,5000"
		}
	}
	if o.steadySet {
		z.steady, z.biSteady = o.steady, o.steady
	}
	if z.loads, err = parseLoads(o.loads); err != nil {
		return err
	}
	if !slices.Contains([]string{modeOneWay, modeTwoWay, modeAll}, o.mode) {
		return fmt.Errorf("-mode %q: want oneway, twoway or all", o.mode)
	}
	pgbench := ""
	if o.pgbench != "" {
		if pgbench, err = exec.LookPath(o.pgbench); err != nil {
			fmt.Printf("-pgbench %s not found (%v): bi-pgbench writes with Go clients instead\n", o.pgbench, err)
			pgbench = ""
		}
	}
	if o.runs < 1 {
		return errors.New("-runs must be at least 1")
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
		if o.profile, err = filepath.Abs(o.profile); err != nil {
			return err
		}
	}
	all := workloads(c, z, o.timeout, pgbench)
	var ws []workload
	if o.only == "" {
		for _, w := range all {
			if o.mode == modeAll || w.mode == o.mode {
				ws = append(ws, w)
			}
		}
	} else {
		want := strings.Split(o.only, ",")
		for _, w := range all {
			if slices.Contains(want, family(w.name)) {
				ws = append(ws, w)
			}
		}
		if len(ws) == 0 {
			return fmt.Errorf("-only %q matches no workload (catchup,smalltx,backlog,steady,twoway,bigtx,onboard,compare,redis,ledger,aa,aa-native,%s)", o.only, strings.Join(twoWayFamilies, ","))
		}
	}
	var est time.Duration
	for _, w := range ws {
		est += time.Duration(o.runs*len(w.variants)) * w.estimate
	}
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	b := &bench{o: o, c: c, runID: hex.EncodeToString(id), pgbisync: o.pgbisync}
	if b.pgbisync == "" && slices.ContainsFunc(ws, func(w workload) bool { return slices.Contains(w.variants, pgbisyncV) }) {
		dir, err := os.MkdirTemp("", "duplex-bench-")
		if err != nil {
			return err
		}
		defer func() {
			if err := os.RemoveAll(dir); err != nil {
				fmt.Fprintln(os.Stderr, "bench: remove the pgbisync build:", err)
			}
		}()
		if b.pgbisync, err = buildPgbisync(ctx, dir); err != nil {
			return err
		}
	}
	started := time.Now()
	fmt.Printf("duplex benchmark %s: %d workloads x %d runs per system; estimated duration %s (setup ~8 s per run, catch-up assumed ~15k rows/s; a run that falls behind waits up to -timeout %s more)\n",
		b.runID, len(ws), o.runs, est.Round(10*time.Second), o.timeout)
	defer func() {
		if err := c.dropLive(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: clean-up:", err)
		}
	}()
	res := &results{started: started.UTC(), command: strings.Join(os.Args, " "), o: o, z: z}
	for _, w := range ws {
		wr := &workloadResult{w: w, values: map[string]map[string][]float64{}, errors: map[string][]string{}}
		res.ws = append(res.ws, wr)
		for r := range o.runs {
			for _, v := range w.variants {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				m, err := b.runOnce(ctx, w, v, r)
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					fmt.Printf("  %-32s %-15s run %d: ERROR %v\n", w.name, v, r+1, err)
					wr.errors[v] = append(wr.errors[v], err.Error())
					continue
				}
				fmt.Printf("  %-32s %-15s run %d: %s\n", w.name, v, r+1, formatRun(m))
				if wr.values[v] == nil {
					wr.values[v] = map[string][]float64{}
				}
				for k, x := range m {
					wr.values[v][k] = append(wr.values[v][k], x)
				}
			}
		}
	}
	res.took = time.Since(started)
	md := res.markdown()
	fmt.Println()
	fmt.Println(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return err
		}
		fmt.Println("results written to", o.out)
	}
	return nil
}

// runOnce runs workload w for variant v on fresh databases and returns
// its measurements, with the CPU time of the processes involved.
func (b *bench) runOnce(ctx context.Context, w workload, v string, r int) (m map[string]float64, err error) {
	b.seq++
	name := fmt.Sprintf("%s%s_%d", dbPrefix, b.runID, b.seq)
	data := w.data
	if data == nil {
		data = itemsData
	}
	p, err := b.c.newPair(ctx, name, data, w.seed)
	defer func() {
		if derr := b.c.dropPair(context.WithoutCancel(ctx), p); derr != nil {
			err = errors.Join(err, fmt.Errorf("clean-up of %s: %w", name, derr))
		}
	}()
	if err != nil {
		return nil, err
	}
	isNative := v == native || v == nativeAgain
	twoWay := v == duplexTwo
	profile := ""
	if b.o.profile != "" {
		profile = filepath.Join(b.o.profile, fmt.Sprintf("%s_%s_%d.pprof", strings.NewReplacer(" ", "_", "/", "_").Replace(w.name), strings.NewReplacer(" ", "_", "(", "", ")", "", "+", "_").Replace(v), r+1))
	}
	apps := []string{syncAppName}
	var proc *syncProc
	var readyAfter time.Duration // a held pgbisync's restart until its ready line
	defer func() {
		if proc != nil {
			err = errors.Join(err, proc.terminate())
		}
	}()
	switch {
	case w.self:
		// The body starts what it measures.
	case isNative:
		if err := b.c.startNative(ctx, p, w.held); err != nil {
			return nil, err
		}
	case v == pgbisyncV:
		apps = pgbisyncApps(name)
		if proc, err = startPgbisync(ctx, b.c, b.pgbisync, p, profile, b.o.verbose); err != nil {
			return nil, err
		}
		if w.held {
			// Started once so that its slots (and checkpoints) exist,
			// then stopped: the body's writes wait in the slot until the
			// restart.
			if err := ready(ctx, p, w.twoSided); err != nil {
				return nil, err
			}
			err := proc.terminate()
			proc = nil
			if err != nil {
				return nil, err
			}
			p.release = func(ctx context.Context) error {
				t0 := time.Now()
				var err error
				proc, err = startPgbisync(ctx, b.c, b.pgbisync, p, profile, b.o.verbose)
				readyAfter = time.Since(t0)
				return err
			}
		}
	default:
		cfg := childConfig{Sync: name, TwoWay: twoWay, Verbose: b.o.verbose, CPUProfile: profile,
			AURL: b.c.dbURL(p.a, map[string]string{"application_name": syncAppName}),
			BURL: b.c.dbURL(p.b, map[string]string{"application_name": syncAppName})}
		cfg.LateralLedger = v == duplexFix || b.o.lateral
		cfg.Hold = w.held
		if v == duplexRedis {
			cfg.Redis = b.o.redis
		}
		if proc, err = startSync(ctx, cfg); err != nil {
			return nil, err
		}
		if w.held {
			held := proc
			p.release = func(context.Context) error { return held.release() }
		}
	}
	if !w.held && !w.self {
		if err := ready(ctx, p, twoWay || w.twoSided); err != nil {
			return nil, err
		}
	}
	pids := func() (ws, aps []int, err error) {
		if isNative {
			return b.c.nativePIDs(ctx, p)
		}
		if ws, err = b.c.slotPIDs(ctx, p); err != nil {
			return nil, nil, err
		}
		aps, err = b.c.backendPIDs(ctx, p, apps)
		return ws, aps, err
	}
	ws0, ap0, err := pids()
	if err != nil {
		return nil, err
	}
	cpuW0, cpuA0 := snapshotCPU(ws0), snapshotCPU(ap0)
	var cpuS0 cpuSnapshot
	if proc != nil {
		cpuS0 = snapshotCPU([]int{proc.pid()})
	}
	var smp *sampler
	if b.o.sample && !isNative {
		smp = &sampler{}
		sctx, stopSampling := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			smp.run(sctx, b.c, p, apps)
		}()
		defer func() {
			stopSampling()
			<-done
		}()
	}
	if w.self && profile != "" {
		// The body runs duplex in this process: profile this process.
		stop, perr := startCPUProfile(profile)
		if perr != nil {
			return nil, perr
		}
		defer func() { err = errors.Join(err, stop()) }()
	}
	m, err = w.body(ctx, p, v)
	if smp != nil {
		fmt.Print(smp.top(12))
	}
	if err != nil {
		return nil, err
	}
	ws1, ap1, err := pids()
	if err != nil {
		return nil, err
	}
	m["cpu_walsender_s"] = cpuSeconds(cpuW0, snapshotCPU(append(ws0, ws1...)))
	m["cpu_apply_s"] = cpuSeconds(cpuA0, snapshotCPU(append(ap0, ap1...)))
	if proc == nil {
		return m, nil
	}
	// A held pgbisync was restarted by the body: its CPU time counts in
	// full (it is absent from cpuS0).
	m["cpu_sync_s"] = cpuSeconds(cpuS0, snapshotCPU([]int{proc.pid()}))
	kb, err := procPeakRSS(proc.pid())
	if err != nil {
		return nil, fmt.Errorf("peak RSS of the sync process: %w", err)
	}
	m["rss_mb"] = float64(kb) / 1024
	if readyAfter > 0 {
		m["ready_s"] = readyAfter.Seconds()
	}
	stopping := proc
	proc = nil
	dead := 0
	if v == pgbisyncV {
		if err := stopping.terminate(); err != nil {
			return nil, err
		}
		if dead, err = deadLetters(ctx, p.poolA, name); err != nil {
			return nil, err
		}
		m["dlq"] = float64(dead)
	} else {
		res, err := stopping.stop()
		if err != nil {
			return nil, err
		}
		dead = res.DeadLetters
	}
	if dead > 0 && !w.conflicts {
		return nil, fmt.Errorf("the sync dead-lettered %d changes: the measurement is void", dead)
	}
	return m, nil
}

// formatRun prints one run's measurements, sorted by name.
func formatRun(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%s", k, num(m[k]))
	}
	return strings.Join(parts, " ")
}

// num formats a measurement with sensible precision.
func num(x float64) string {
	switch {
	case x >= 1000:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}
