package chaos_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/dlq/dlqpg"
	"github.com/duplexsync/duplex/internal/testenv"
)

// long reports whether the long form runs (make chaos): 30 s outages, more
// kills, longer write phases.
func long() bool { return os.Getenv("DUPLEX_CHAOS_LONG") == "1" }

// pick returns short in the bounded form and long in the long form.
func pick[T any](short, lng T) T {
	if long() {
		return lng
	}
	return short
}

const schema = `
CREATE TABLE customers (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	email text NOT NULL,
	payment_status text NOT NULL DEFAULT 'trial',
	last_activity text,
	note text,
	counter bigint NOT NULL DEFAULT 0,
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE events (
	id text PRIMARY KEY,
	side text NOT NULL,
	payload text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);`

// env is one chaos scenario: two databases with the same seeded customers,
// and the arguments to run pgbisync on them.
type env struct {
	t     *testing.T
	a, b  *testenv.DB
	name  string
	admin string
	rows  int
	extra []string // more pgbisync flags

	mu    sync.Mutex
	procs []*proc
}

func newEnv(t *testing.T, rows int, extra ...string) *env {
	t.Helper()
	e := &env{t: t, a: testenv.Postgres(t), b: testenv.Postgres(t), rows: rows, extra: extra}
	testenv.RequireLogical(t, e.a)
	e.name = testenv.UniqueName(t, "chaos")
	e.admin = freeAddr(t)
	for _, db := range []*testenv.DB{e.a, e.b} {
		_, err := db.Pool.Exec(t.Context(), schema)
		require.NoError(t, err)
		_, err = db.Pool.Exec(t.Context(), `INSERT INTO customers (id, name, email, updated_at)
			SELECT i, 'customer ' || i, 'c' || i || '@example.com', '2026-01-01' FROM generate_series(1, $1) i`, rows)
		require.NoError(t, err)
	}
	t.Cleanup(e.cleanup)
	return e
}

// cleanup stops every process still running, then removes the sync's
// replication origins, which are cluster-wide (the databases, their slots
// and publications go with testenv's cleanup).
func (e *env) cleanup() {
	e.mu.Lock()
	procs := e.procs
	e.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	e.keepLogs()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Slots must be inactive before testenv drops them: wait for the
	// killed processes' walsenders to go.
	for _, db := range []*testenv.DB{e.a, e.b} {
		for range 100 {
			var n int
			if db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND active`).Scan(&n) != nil || n == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	_, _ = e.a.Pool.Exec(ctx, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE $1`, "duplex:"+e.name+"%")
}

// args returns pgbisync's flags for this env, then more.
func (e *env) args(more ...string) []string {
	args := []string{
		"-a", e.a.URL, "-b", e.b.URL,
		"-tables", "public.customers,public.events",
		"-authority", "customers.name=a,customers.email=a,customers.payment_status=b",
		"-conflict", "lww", "-skew", "50ms",
		"-admin", e.admin,
		"-name", e.name,
		"-log-level", "warn",
	}
	args = append(args, e.extra...)
	if l := os.Getenv("DUPLEX_CHAOS_LOG_LEVEL"); l != "" {
		args = append(args, "-log-level", l)
	}
	return append(args, more...)
}

// start runs pgbisync with e's flags and waits until it is ready.
func (e *env) start(more ...string) *proc {
	e.t.Helper()
	p := e.spawn(nil, e.args(more...)...)
	p.waitReady(e.t)
	return p
}

// spawn runs pgbisync with args and env (added to the environment) without
// waiting.
func (e *env) spawn(environ []string, args ...string) *proc {
	e.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), environ...)
	p := &proc{cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	require.NoError(e.t, err)
	cmd.Stderr = &p.stderr
	require.NoError(e.t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.stdout.Write([]byte(line + "\n"))
			if line == "pgbisync: ready" {
				p.readyOnce.Do(func() { close(p.ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.done)
	}()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p
}

// proc is a running pgbisync.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr testenv.Buffer
	ready          chan struct{}
	readyOnce      sync.Once
	done           chan struct{}
	err            error
}

func (p *proc) output() string { return p.stdout.String() + p.stderr.String() }

func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-p.ready:
	case <-p.done:
		t.Fatalf("pgbisync exited before it was ready: %v\n%s", p.err, tail(p.output(), 3000))
	case <-time.After(60 * time.Second):
		p.kill()
		t.Fatalf("pgbisync not ready in 60s\n%s", p.output())
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// exitCode waits up to d for the process to exit and returns its status.
func (p *proc) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.kill()
		t.Fatalf("pgbisync did not exit in %s\n%s", d, p.output())
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("pgbisync: %v", p.err)
	return -1
}

// stop sends SIGTERM and requires a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.exitCode(t, 30*time.Second), "SIGTERM must stop pgbisync cleanly\n%s", p.output())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// writers edit both sides until halted: each inserts events (single-sided
// writes, each exactly once) and updates customers; a owns name and email,
// b owns payment_status, and both write last_activity (same-field
// conflicts, decided by last-write-wins). clockOffset shifts a side's
// updated_at (a clock running ahead or behind).
type writers struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	counts [2]struct{ events, updates, errors atomic.Int64 }
}

func (e *env) write(rate int, clockOffset [2]time.Duration) *writers {
	return e.writeN(rate, 1, clockOffset)
}

// writeN writes rate writes/s per side from n connections per side.
func (e *env) writeN(rate, n int, clockOffset [2]time.Duration) *writers {
	w := &writers{stop: make(chan struct{})}
	for i, side := range []string{"a", "b"} {
		db := []*testenv.DB{e.a, e.b}[i]
		for j := range n {
			run := strconv.FormatInt(time.Now().UnixNano(), 36) + "." + strconv.Itoa(j)
			w.wg.Go(func() { w.loop(db.Pool, i, side, run, max(rate/n, 1), e.rows, clockOffset[i]) })
		}
	}
	return w
}

func (w *writers) loop(pool *pgxpool.Pool, i int, side, run string, rate, rows int, offset time.Duration) {
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	ts := fmt.Sprintf("clock_timestamp() + interval '%d microseconds'", offset.Microseconds())
	c := &w.counts[i]
	for n := 0; ; n++ {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		id := rnd.IntN(rows) + 1
		switch {
		case n%2 == 0:
			_, err = pool.Exec(ctx, `INSERT INTO events (id, side, payload, updated_at) VALUES ($1, $2, $3, `+ts+`)`,
				fmt.Sprintf("%s-%s-%d", side, run, n), side, fmt.Sprintf("event %d from %s", n, side))
			if err == nil {
				c.events.Add(1)
			}
		case n%10 == 1:
			_, err = pool.Exec(ctx, `UPDATE customers SET last_activity = $2, updated_at = `+ts+` WHERE id = $1`,
				n%7+1, fmt.Sprintf("%s visit %d", side, n))
		case side == "a":
			_, err = pool.Exec(ctx, `UPDATE customers SET name = $2, email = $3, updated_at = `+ts+` WHERE id = $1`,
				id, fmt.Sprintf("customer %d rev %d", id, n), fmt.Sprintf("c%d.%d@example.com", id, n))
		default:
			_, err = pool.Exec(ctx, `UPDATE customers SET payment_status = $2, updated_at = `+ts+` WHERE id = $1`,
				id, []string{"trial", "active", "past_due", "cancelled"}[rnd.IntN(4)])
		}
		cancel()
		switch {
		case err != nil:
			c.errors.Add(1)
		case n%2 != 0:
			c.updates.Add(1)
		}
	}
}

// halt stops the writers and returns what they committed.
func (w *writers) halt() string {
	close(w.stop)
	w.wg.Wait()
	return fmt.Sprintf("writes committed a: %d events + %d updates, b: %d events + %d updates (failed during faults: %d, %d)",
		w.counts[0].events.Load(), w.counts[0].updates.Load(), w.counts[1].events.Load(), w.counts[1].updates.Load(),
		w.counts[0].errors.Load(), w.counts[1].errors.Load())
}

// verdict is what the convergence oracle found.
type verdict struct {
	converge  time.Duration
	events    int
	dlq       int
	dlqKeys   []string
	heldRows  int // rows (table and key) with a DLQ entry, whatever its status
	applied   float64
	unequal   []string
	lastCheck string
}

func (v verdict) String() string {
	return fmt.Sprintf("converged %.1fs after the writers stopped; %d events on each side; %d DLQ entries (%d customers held: %s; %s); %0.f changes applied",
		v.converge.Seconds(), v.events, v.dlq, len(v.dlqKeys), strings.Join(v.dlqKeys, " "), v.perHeldRow(), v.applied)
}

// perHeldRow reports the DLQ entries per held row (the goal is 1: later
// changes of a held row refresh its entry).
func (v verdict) perHeldRow() string {
	if v.heldRows == 0 {
		return "no held row"
	}
	return fmt.Sprintf("%d rows held, %.2f DLQ entries per held row", v.heldRows, float64(v.dlq)/float64(v.heldRows))
}

// converge waits until the oracle holds, then checks that nothing more is
// applied, and returns the figures. p is the running pgbisync.
// dlqFigure says how many DLQ entries the sync has per held row, for a
// run that did not converge (the verdict says it for one that did).
func (e *env) dlqFigure() string {
	entries, err := e.deadLetters(context.Background())
	if err != nil {
		return "DLQ unreadable: " + err.Error()
	}
	rows := map[string]bool{}
	for _, en := range entries {
		rows[en.Change.Table.String()+" "+en.Key()] = true
	}
	return fmt.Sprintf("%d DLQ entries; %s", len(entries), verdict{dlq: len(entries), heldRows: len(rows)}.perHeldRow())
}

func (e *env) converge(p *proc) verdict {
	t := e.t
	t.Helper()
	start := time.Now()
	deadline := start.Add(pick(90*time.Second, 240*time.Second))
	var v verdict
	ok := 0
	for ok < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the sides did not converge in %s: %s; %s\n%s", time.Since(start).Round(time.Second), v.lastCheck, e.dlqFigure(), tail(p.output(), 4000))
		}
		select {
		case <-p.done:
			t.Fatalf("pgbisync exited while converging: %v\n%s", p.err, tail(p.output(), 4000))
		case <-time.After(500 * time.Millisecond):
		}
		var good bool
		v, good = e.check()
		if good {
			ok++
		} else {
			ok = 0
		}
	}
	v.converge = time.Since(start)
	// Nothing is applied once both sides agree.
	before := metricSum(t, e.admin, "duplex_changes_applied_total")
	time.Sleep(2 * time.Second)
	after := metricSum(t, e.admin, "duplex_changes_applied_total")
	require.Equal(t, before, after, "changes applied after quiescence")
	v.applied = after
	return v
}

// check runs the oracle once: events identical on both sides (each exactly
// once), customers equal or held in the DLQ, every DLQ entry with its
// payload and reason.
func (e *env) check() (verdict, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var v verdict
	events := func(db *testenv.DB) (string, int, error) {
		var s string
		var n int
		err := db.Pool.QueryRow(ctx, `SELECT coalesce(string_agg(id || '|' || side || '|' || payload, E'\n' ORDER BY id), ''), count(*) FROM events`).Scan(&s, &n)
		return s, n, err
	}
	ea, na, err := events(e.a)
	if err != nil {
		v.lastCheck = err.Error()
		return v, false
	}
	eb, nb, err := events(e.b)
	if err != nil {
		v.lastCheck = err.Error()
		return v, false
	}
	v.events = na
	if ea != eb {
		v.lastCheck = fmt.Sprintf("events differ: %d on a, %d on b", na, nb)
		return v, false
	}
	rows := func(db *testenv.DB) (map[int64]string, error) {
		r, err := db.Pool.Query(ctx, `SELECT id, row(name, email, payment_status, last_activity, updated_at)::text FROM customers`)
		if err != nil {
			return nil, err
		}
		out := map[int64]string{}
		for r.Next() {
			var id int64
			var s string
			if err := r.Scan(&id, &s); err != nil {
				return nil, err
			}
			out[id] = s
		}
		return out, r.Err()
	}
	ca, err := rows(e.a)
	if err != nil {
		v.lastCheck = err.Error()
		return v, false
	}
	cb, err := rows(e.b)
	if err != nil {
		v.lastCheck = err.Error()
		return v, false
	}
	entries, err := e.deadLetters(ctx)
	if err != nil {
		v.lastCheck = err.Error()
		return v, false
	}
	v.dlq = len(entries)
	held := map[string]bool{}
	heldRows := map[string]bool{}
	for _, en := range entries {
		heldRows[en.Change.Table.String()+" "+en.Key()] = true
		if en.Error == "" || en.Reason == "" || en.Change.ID == "" {
			v.lastCheck = fmt.Sprintf("DLQ entry %d lacks its payload or reason: %+v", en.ID, en)
			return v, false
		}
		if en.Status == dlq.StatusPending && en.Change.Table.Name == "customers" {
			held[en.Key()] = true
		}
	}
	v.heldRows = len(heldRows)
	for k := range held {
		v.dlqKeys = append(v.dlqKeys, k)
	}
	sort.Strings(v.dlqKeys)
	for id, ra := range ca {
		if cb[id] != ra && !held["id="+strconv.FormatInt(id, 10)] {
			v.unequal = append(v.unequal, fmt.Sprintf("id=%d a=%s b=%s", id, ra, cb[id]))
		}
	}
	if len(ca) != len(cb) {
		v.unequal = append(v.unequal, fmt.Sprintf("%d customers on a, %d on b", len(ca), len(cb)))
	}
	if len(v.unequal) > 0 {
		v.lastCheck = fmt.Sprintf("%d customers differ without a DLQ entry, e.g. %s", len(v.unequal), v.unequal[0])
		return v, false
	}
	return v, true
}

// deadLetters lists every entry of the sync's DLQ (database A's duplex
// schema).
func (e *env) deadLetters(ctx context.Context) ([]dlq.Entry, error) {
	var n int
	if err := e.a.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'duplex' AND tablename = 'dead_letters'`).Scan(&n); err != nil || n == 0 {
		return nil, err
	}
	store, err := dlqpg.New(ctx, e.a.Pool, dlqpg.Config{})
	if err != nil {
		return nil, err
	}
	var all []dlq.Entry
	f := dlq.Filter{Limit: 1000, OldestFirst: true}
	for {
		page, _, err := store.List(ctx, f)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < f.Limit {
			return all, nil
		}
		f.After = page[len(page)-1].ID
	}
}

// metricSum adds up every sample of a metric on pgbisync's /metrics.
func metricSum(t *testing.T, admin, name string) float64 {
	t.Helper()
	body := httpGet(t, "http://"+admin+"/metrics")
	var sum float64
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		x, err := strconv.ParseFloat(f[len(f)-1], 64)
		require.NoError(t, err, line)
		sum += x
	}
	return sum
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	var lastErr error
	for range 50 {
		resp, err := http.Get(u)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, rerr)
			return string(b)
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", u, lastErr)
	return ""
}

// adminURL returns a database URL with its path replaced by the postgres
// database, for statements that cannot run in the database they affect.
func adminURL(t *testing.T, db *testenv.DB) string {
	u, err := url.Parse(db.URL)
	require.NoError(t, err)
	u.Path = "/postgres"
	return u.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// report logs a fault test's figures in one line the closing notes quote.
func report(t *testing.T, fault, writes string, v verdict) {
	t.Logf("CHAOS %s: %s; %s", fault, writes, v)
}
