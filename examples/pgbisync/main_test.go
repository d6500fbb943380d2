package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex/internal/testenv"
)

// binary is the pgbisync built once for the whole test run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pgbisync-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "pgbisync")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(testenv.RemoveAfter(m, dir))
}

const ddl = `
CREATE TABLE customers (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	email text NOT NULL,
	payment_status text NOT NULL DEFAULT 'trial',
	notes text,
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE orders (
	customer_id bigint NOT NULL,
	order_no int NOT NULL,
	amount numeric(12, 2) NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	PRIMARY KEY (customer_id, order_no)
);
CREATE TABLE events (
	side text NOT NULL,
	n bigint NOT NULL,
	payload text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	PRIMARY KEY (side, n)
);
INSERT INTO customers (id, name, email, updated_at)
	SELECT i, 'customer ' || i, 'c' || i || '@example.com', '2026-01-01' FROM generate_series(1, 20) i;
`

// pair is two databases with the test schema and a sync name for them.
type pair struct {
	a, b *testenv.DB
	name string
}

// newPair creates the two databases and registers the removal of every
// cluster-wide object the sync creates (slots, origins) before they are
// dropped.
func newPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{a: testenv.Postgres(t), b: testenv.Postgres(t), name: testenv.UniqueName(t, "bisync")}
	testenv.RequireLogical(t, p.a)
	for _, db := range []*testenv.DB{p.a, p.b} {
		_, err := db.Pool.Exec(t.Context(), ddl)
		require.NoError(t, err)
	}
	t.Cleanup(func() { dropSyncObjects(t, p) })
	return p
}

// dropSyncObjects removes the sync's slots, publications and replication
// origins: pgbisync keeps them on exit so that a restart resumes.
func dropSyncObjects(t *testing.T, p *pair) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, db := range []*testenv.DB{p.a, p.b} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := db.Pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = current_database() AND active_pid IS NOT NULL`)
			if err == nil {
				_, err = db.Pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()`)
			}
			if err == nil || time.Now().After(deadline) {
				if err != nil {
					t.Errorf("drop slots of %s: %v", db.Name, err)
				}
				break
			}
			time.Sleep(100 * time.Millisecond) // a terminated walsender takes a moment to release its slot
		}
	}
	if _, err := p.a.Pool.Exec(ctx, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE starts_with(roname, $1)`,
		"duplex:"+p.name+":"); err != nil {
		t.Errorf("drop replication origins of %s: %v", p.name, err)
	}
}

// withPassword returns u with a password added: the test server trusts
// local connections, so it still connects, and the password must never
// show anywhere.
func withPassword(t *testing.T, raw, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

// proc is one running pgbisync.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *testenv.Buffer
	done           chan struct{}
	err            error
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv starts pgbisync with env added to the test's environment.
func startEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary, args...), stdout: &testenv.Buffer{}, stderr: &testenv.Buffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// output is everything the process printed.
func (p *proc) output() string { return p.stdout.String() + p.stderr.String() }

// waitReady waits for the "pgbisync: ready" line on stdout.
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.stdout.String(), "pgbisync: ready\n") {
		select {
		case <-p.done:
			t.Fatalf("pgbisync exited before ready (%v):\n%s", p.err, p.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbisync not ready after 60s:\n%s", p.output())
		}
	}
}

// exit waits for the process to end and returns its exit code.
func (p *proc) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("pgbisync did not exit within 60s:\n%s", p.output())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, p.err)
	return 0
}

// stop sends SIGTERM and expects a graceful exit 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.stopWith(t, syscall.SIGTERM)
}

// stopWith sends sig and expects a graceful exit 0.
func (p *proc) stopWith(t *testing.T, sig os.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
	require.Equal(t, 0, p.exit(t), "%v must stop pgbisync gracefully:\n%s", sig, p.output())
	require.Contains(t, p.stderr.String(), `msg="sync stopped"`)
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// dump renders a table in key order, one row per line.
func dump(t *testing.T, pool *pgxpool.Pool, query string) string {
	t.Helper()
	rows, err := pool.Query(t.Context(), query)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return strings.Join(lines, "\n")
}

var (
	customersQ = `SELECT row(id, name, email, payment_status, notes, updated_at)::text FROM customers ORDER BY id`
	ordersQ    = `SELECT row(customer_id, order_no, amount, updated_at)::text FROM orders ORDER BY 1`
	eventsQ    = `SELECT row(side, n, payload, updated_at)::text FROM events ORDER BY side, n`
)

// waitEqual polls until query gives the same rows on both sides.
func waitEqual(t *testing.T, p *pair, query string, procs ...*proc) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, b := dump(t, p.a.Pool, query), dump(t, p.b.Pool, query)
		if a == b {
			return a
		}
		for _, pr := range procs {
			select {
			case <-pr.done:
				t.Fatalf("pgbisync exited (%v):\n%s", pr.err, pr.output())
			default:
			}
		}
		if time.Now().After(deadline) {
			require.Equal(t, a, b, "%s differs after 60s", query)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

// get fetches an admin URL.
func get(t *testing.T, u string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// waitMetrics polls /metrics until every want appears.
func waitMetrics(t *testing.T, admin string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(t, "http://"+admin+"/metrics")
		require.Equal(t, http.StatusOK, code)
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q after 30s:\n%s", missing, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writer inserts events rows (side, 1..n) and edits the fields its side
// owns until stopped; inserted is how many events committed.
type writer struct {
	side     string
	pool     *pgxpool.Pool
	inserted atomic.Int64
	failed   atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startWriter(side string, pool *pgxpool.Pool) *writer {
	w := &writer{side: side, pool: pool, stop: make(chan struct{})}
	w.wg.Go(func() {
		ctx := context.Background()
		for i := int64(1); ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			n := w.inserted.Load() + 1
			tx, err := w.pool.Begin(ctx)
			if err != nil {
				w.failed.Add(1)
				continue
			}
			_, err = tx.Exec(ctx, `INSERT INTO events (side, n, payload) VALUES ($1, $2, $3)`, w.side, n, fmt.Sprintf("%s-%d", w.side, n))
			if err == nil {
				// Each side edits only the field it owns: merged, never a conflict.
				field := map[string]string{"a": "email", "b": "payment_status"}[w.side]
				// Row 7 is held in the DLQ and row 20 deleted: edit the others.
				id := []int{1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}[i%18]
				_, err = tx.Exec(ctx, `UPDATE customers SET `+field+` = $2 WHERE id = $1`, id, fmt.Sprintf("%s-%d", w.side, n))
			}
			if err == nil {
				err = tx.Commit(ctx)
			} else {
				_ = tx.Rollback(ctx)
			}
			if err != nil {
				w.failed.Add(1)
				continue
			}
			w.inserted.Store(n)
		}
	})
	return w
}

func (w *writer) halt() int64 {
	close(w.stop)
	w.wg.Wait()
	return w.inserted.Load()
}

// post sends an empty POST to an admin URL.
func post(t *testing.T, u string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, u, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// dlqEntry is the part of a DLQ entry the tests read.
type dlqEntry struct {
	ID        int64 `json:"id"`
	Direction struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"direction"`
	Change struct {
		Table struct {
			Schema string `json:"schema"`
			Name   string `json:"name"`
		} `json:"table"`
	} `json:"change"`
	Status   string `json:"status"`
	Error    string `json:"error"`
	Count    int    `json:"count"`
	Table    string `json:"table"`
	Key      string `json:"key"`
	Conflict *struct {
		Source map[string]any `json:"source"`
	} `json:"conflict"`
}

// dlqList calls GET /dlq?query.
func dlqList(t *testing.T, admin, query string) []dlqEntry {
	t.Helper()
	code, body := get(t, "http://"+admin+"/dlq?"+query)
	require.Equal(t, http.StatusOK, code, body)
	var list struct {
		Entries []dlqEntry `json:"entries"`
		Total   int        `json:"total"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &list), body)
	return list.Entries
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSyncsBothWaysAndSurvivesKill runs pgbisync between two databases:
// edits on both sides converge; a second instance with the same -name is
// refused; SIGTERM stops it with status 0; conflicting edits made while it
// was down are decided on restart (LWW, ties to the DLQ) and show in
// /metrics; then, with writers busy on both sides, it is SIGKILLed and
// restarted, and every write arrives exactly once. The password in -a
// appears nowhere.
func TestSyncsBothWaysAndSurvivesKill(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	rd := testenv.Redis(t)
	const password = "Pw-7d1f9c-secret"
	admin := freeAddr(t)
	args := []string{
		"-a", withPassword(t, p.a.URL, password), "-b", p.b.URL,
		"-tables", "public.customers,orders,public.events",
		"-authority", "customers.name=a,customers.email=a,customers.payment_status=b",
		"-conflict", "lww", "-skew", "500ms",
		"-cdc", "logical",
		"-redis", rd.URL, "-redis-prefix", rd.Prefix,
		"-admin", admin,
		"-name", p.name,
	}
	var outputs []string
	checkNoPassword := func(pr *proc) {
		t.Helper()
		outputs = append(outputs, pr.output())
		require.NotContains(t, pr.output(), password)
	}

	first := start(t, args...)
	first.waitReady(t)
	require.Contains(t, first.stdout.String(), "pgbisync: sync "+p.name+": a=postgres://")
	require.Contains(t, first.stdout.String(), ":xxxxx@", "the summary shows -a redacted")
	code, body := get(t, "http://"+admin+"/healthz")
	require.Equal(t, http.StatusOK, code, body)
	// Before any change: the contract's metrics show, at zero, per direction.
	waitMetrics(t, admin,
		`duplex_changes_applied_total{direction="a_to_b",table="public.orders"} 0`,
		`duplex_conflicts_total{direction="b_to_a",kind="update_update",resolution="dead_lettered",table="public.customers"} 0`,
		`duplex_dlq_depth{direction="a_to_b",reason="conflict",table="public.events"} 0`,
		`duplex_slot_retained_wal_bytes{slot="duplex_`+p.name+`__a"}`)

	// Edits both ways: inserts, owned-field updates, composite keys, deletes.
	ctx := t.Context()
	_, err := p.a.Pool.Exec(ctx, `UPDATE customers SET name = 'renamed on a ' || id WHERE id <= 5`)
	require.NoError(t, err)
	_, err = p.b.Pool.Exec(ctx, `UPDATE customers SET payment_status = 'active' WHERE id <= 5`)
	require.NoError(t, err)
	_, err = p.a.Pool.Exec(ctx, `INSERT INTO customers (id, name, email) VALUES (101, 'new on a', 'a@example.com')`)
	require.NoError(t, err)
	_, err = p.b.Pool.Exec(ctx, `INSERT INTO customers (id, name, email) VALUES (201, 'new on b', 'b@example.com')`)
	require.NoError(t, err)
	_, err = p.a.Pool.Exec(ctx, `INSERT INTO orders (customer_id, order_no, amount) SELECT 1, g, g * 1.5 FROM generate_series(1, 10) g`)
	require.NoError(t, err)
	_, err = p.b.Pool.Exec(ctx, `INSERT INTO orders (customer_id, order_no, amount) SELECT 2, g, g * 2.5 FROM generate_series(1, 10) g`)
	require.NoError(t, err)
	waitEqual(t, p, ordersQ, first)
	_, err = p.b.Pool.Exec(ctx, `DELETE FROM orders WHERE customer_id = 1 AND order_no > 5`)
	require.NoError(t, err)
	_, err = p.b.Pool.Exec(ctx, `DELETE FROM customers WHERE id = 20`)
	require.NoError(t, err)
	rows := waitEqual(t, p, customersQ, first)
	require.Contains(t, rows, `(3,"renamed on a 3",c3@example.com,active,`)
	require.Contains(t, rows, `(201,"new on b",b@example.com,trial,`)
	require.NotContains(t, rows, `(20,`)
	require.Equal(t, 15, strings.Count(waitEqual(t, p, ordersQ, first), "\n")+1)
	waitMetrics(t, admin,
		`duplex_changes_applied_total{direction="a_to_b",table="public.customers"}`,
		`duplex_changes_applied_total{direction="b_to_a",table="public.customers"}`,
		`duplex_sync_lag_seconds{direction="a_to_b"}`, `duplex_sync_lag_seconds{direction="b_to_a"}`)

	// Dedup marks went to Redis, under the prefix given.
	keys, _, err := rd.Client.Scan(ctx, 0, rd.Prefix+p.name+":*", 1000).Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys, "applied change IDs are marked in Redis")

	// A second instance with the same name is refused, the first unharmed.
	// Without -admin: it would fail on the busy port first.
	second := start(t, append(args[:len(args)-4:len(args)-4], "-name", p.name, "-lock-wait", "500ms")...)
	require.NotEqual(t, 0, second.exit(t))
	require.Contains(t, second.stderr.String(), "another pgbisync with -name "+p.name+" is already running")
	require.Contains(t, second.stderr.String(), "lock held by backend pid")
	checkNoPassword(second)
	_, err = p.a.Pool.Exec(ctx, `UPDATE customers SET name = 'after the refused start' WHERE id = 6`)
	require.NoError(t, err)
	require.Contains(t, waitEqual(t, p, customersQ, first), `"after the refused start"`)

	first.stop(t)
	checkNoPassword(first)

	// While it is down: same-field conflicts on notes, which no authority
	// rule covers. Row 7: equal times (a tie within -skew: DLQ). Row 8: b's
	// write is a minute later (b wins on both sides).
	for _, e := range []struct {
		db    *testenv.DB
		notes string
		id    int
		at    string
	}{
		{p.a, "tie from a", 7, "2026-03-01 12:00:00+00"}, {p.b, "tie from b", 7, "2026-03-01 12:00:00+00"},
		{p.a, "older from a", 8, "2026-03-01 12:00:00+00"}, {p.b, "newer from b", 8, "2026-03-01 12:01:00+00"},
	} {
		_, err := e.db.Pool.Exec(ctx, `UPDATE customers SET notes = $1, updated_at = $2 WHERE id = $3`, e.notes, e.at, e.id)
		require.NoError(t, err)
	}
	_, err = p.a.Pool.Exec(ctx, `INSERT INTO orders (customer_id, order_no, amount) VALUES (3, 1, 99)`)
	require.NoError(t, err)

	// Restart with the same name: it resumes and decides the conflicts.
	restarted := start(t, args...)
	restarted.waitReady(t)
	waitFor(t, "row 8 to converge on b's newer notes", func() bool {
		return strings.Contains(dump(t, p.a.Pool, customersQ), `newer from b`) && strings.Contains(dump(t, p.b.Pool, customersQ), `newer from b`)
	})
	require.Contains(t, waitEqual(t, p, ordersQ, restarted), "(3,1,99.00,", "a write made while pgbisync was down arrives")
	metricsBody := waitMetrics(t, admin, `duplex_conflicts_total{direction="a_to_b",kind="update_update",resolution="dead_lettered",table="public.customers"} 1`,
		`duplex_conflicts_total{direction="b_to_a",kind="update_update",resolution="dead_lettered",table="public.customers"} 1`)
	require.NotContains(t, metricsBody, password)
	// Row 8's conflict is decided once, by the direction that merges the row
	// first (b's newer notes win), and written to both sides.
	decided := 0
	for _, l := range strings.Split(metricsBody, "\n") {
		if strings.HasPrefix(l, `duplex_conflicts_total{`) && strings.Contains(l, `kind="update_update"`) &&
			(strings.Contains(l, `resolution="applied"`) || strings.Contains(l, `resolution="kept_target"`)) && strings.HasSuffix(l, " 1") {
			decided++
		}
	}
	require.Equal(t, 1, decided, "row 8's conflict decided once:\n%s", metricsBody)
	// The tie stays as each side had it, held in the DLQ for a person.
	require.Contains(t, dump(t, p.a.Pool, customersQ), "tie from a")
	require.Contains(t, dump(t, p.b.Pool, customersQ), "tie from b")

	// The DLQ admin at the same address: the UI, and the JSON API listing the
	// tie both ways; resolving it for a copies a's row to b.
	code, body = get(t, "http://"+admin+"/")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "pgbisync "+p.name)
	require.NotContains(t, body, password)
	// Both directions held the tie: one entry for the row, put twice.
	var entries []dlqEntry
	waitFor(t, "both directions to hold the tie in one entry", func() bool {
		entries = dlqList(t, admin, "sync="+p.name+"&status=pending")
		return len(entries) == 1 && entries[0].Count == 2
	})
	tie := entries[0]
	require.Equal(t, "public.customers", tie.Change.Table.Schema+"."+tie.Change.Table.Name)
	require.Equal(t, "public.customers", tie.Table, "table at the top level")
	require.Equal(t, "id=7", tie.Key, "key at the top level")
	require.Contains(t, dump(t, p.a.Pool, customersQ), "tie from a")
	// Resolved from a terminal: pgbisync -dlq against the running one.
	show := start(t, "-dlq", "show", "-admin", admin, "-id", strconv.FormatInt(tie.ID, 10))
	require.Equal(t, 0, show.exit(t), show.output())
	require.Regexp(t, `!\s+notes\s+.*"tie from [ab]"\s+"tie from [ab]"`, show.stdout.String(), "the three-way view")
	solve := start(t, "-dlq", "resolve", "-admin", admin, "-id", strconv.FormatInt(tie.ID, 10), "-winner", "a")
	require.Equal(t, 0, solve.exit(t), solve.output())
	require.Contains(t, solve.stdout.String(), fmt.Sprintf("resolved entry %d for a", tie.ID))
	code, body = get(t, fmt.Sprintf("http://%s/dlq/%d", admin, tie.ID))
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"status":"resolved"`)
	require.Empty(t, dlqList(t, admin, "sync="+p.name+"&status=pending"))
	require.Contains(t, waitEqual(t, p, customersQ, restarted), `"tie from a"`)

	// Writers on both sides; SIGKILL in the middle (twice), writes while it
	// is dead, restart with the same name; nothing lost, nothing twice.
	wa, wb := startWriter("a", p.a.Pool), startWriter("b", p.b.Pool)
	written := func() int64 { return wa.inserted.Load() + wb.inserted.Load() }
	victim := restarted
	for round := range 2 {
		// Kill while the sync is applying: it has applied some of the load.
		seen := func() int64 {
			var n int64
			require.NoError(t, p.b.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE side = 'a'`).Scan(&n))
			return n
		}
		before := seen()
		waitFor(t, "the sync to apply some of the load", func() bool { return seen() > before+100 })
		require.NoError(t, victim.cmd.Process.Kill())
		require.Equal(t, -1, victim.exit(t), "killed") // -1: terminated by a signal
		checkNoPassword(victim)
		atKill := written()
		waitFor(t, "writers to write while pgbisync is dead", func() bool { return written() > atKill+200 })
		victim = start(t, args...)
		victim.waitReady(t)
		t.Logf("round %d: killed after %d events, restarted after %d", round, atKill, written())
	}
	last := victim
	atStart := written()
	waitFor(t, "writers to write after the restart", func() bool { return written() > atStart+200 })
	na, nb := wa.halt(), wb.halt()
	t.Logf("events written: a=%d b=%d (failed attempts a=%d b=%d)", na, nb, wa.failed.Load(), wb.failed.Load())

	events := waitEqual(t, p, eventsQ, last)
	require.Equal(t, int(na+nb), strings.Count(events, "\n")+1, "every event on both sides")
	for _, db := range []*testenv.DB{p.a, p.b} {
		var countA, maxA, countB, maxB int64
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE side = 'a'), coalesce(max(n) FILTER (WHERE side = 'a'), 0),
			count(*) FILTER (WHERE side = 'b'), coalesce(max(n) FILTER (WHERE side = 'b'), 0) FROM events`).Scan(&countA, &maxA, &countB, &maxB))
		require.Equal(t, [4]int64{na, na, nb, nb}, [4]int64{countA, maxA, countB, maxB}, "events 1..n of each side, once, on %s", db.Name)
	}
	rows = waitEqual(t, p, customersQ, last)
	require.Contains(t, rows, fmt.Sprintf("a-%d", na), "a's last email edit arrived")
	require.Contains(t, rows, fmt.Sprintf("b-%d", nb), "b's last payment_status edit arrived")
	waitEqual(t, p, ordersQ, last)
	require.Empty(t, dlqList(t, admin, "sync="+p.name+"&status=pending"), "nothing of the load was dead-lettered")
	last.stop(t)
	checkNoPassword(last)
	for _, out := range outputs {
		require.NotContains(t, out, password)
	}
}

// TestRefusesBadConfiguration checks the errors that stop pgbisync before
// it creates anything: each exits non-zero with a message naming the flag,
// table or field at fault, and never shows a password.
func TestRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	ctx := t.Context()
	for _, db := range []*testenv.DB{p.a, p.b} {
		_, err := db.Pool.Exec(ctx, `CREATE TABLE "NoKey" (x int, y text); CREATE TABLE stamps (id int PRIMARY KEY, v text);
			CREATE TABLE texts (id int PRIMARY KEY, updated_at text)`)
		require.NoError(t, err)
	}
	const password = "Zq-4411-hunter2"
	base := func(extra ...string) []string {
		return append([]string{"-a", withPassword(t, p.a.URL, password), "-b", p.b.URL,
			"-tables", "customers", "-name", p.name}, extra...)
	}
	unreachable := "postgres://root:" + password + "@127.0.0.1:1/db_a"
	missingDB, err := url.Parse(withPassword(t, p.a.URL, password))
	require.NoError(t, err)
	missingDB.Path = "/" + p.a.Name + "_missing"
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unreachable", append(base()[2:], "-a", unreachable), []string{"-a: cannot connect to postgres://root:xxxxx@127.0.0.1:1/db_a"}},
		{"missing database", append(base()[2:], "-a", missingDB.String()), []string{"-a: cannot connect", "does not exist"}},
		{"key=value DSN", append(base()[2:], "-a", "host=127.0.0.1 port=1 user=root password='"+password+"' dbname=x"), []string{"-a: cannot connect to host=127.0.0.1 port=1 user=root password=xxxxx dbname=x"}},
		{"unparsable DSN", append(base()[2:], "-a", "postgres://root:"+password+"@127.0.0.1:notaport/x"), []string{"-a: invalid connection string"}},
		{"table without primary key", base("-tables", `customers,NoKey`), []string{"-a: table public.NoKey has no primary key", "-b: table public.NoKey has no primary key"}},
		{"missing table", base("-tables", "customers,nope"), []string{"-a: table public.nope does not exist"}},
		{"no replica identity", base("-tables", "customers,stamps", "-no-replica-identity", "-conflict", "dlq"), []string{
			"-a: table public.customers is not REPLICA IDENTITY FULL", "-b: table public.stamps is not REPLICA IDENTITY FULL"}},
		{"negative skew", base("-skew", "-1s"), []string{"-skew -1s: the clock-skew tolerance must not be negative"}},
		{"lww column not a timestamp", base("-tables", "customers,stamps,texts"), []string{
			`-conflict lww -lww-column updated_at (on -a): resolve: LWW column "updated_at": public.texts.updated_at is text, not a timestamp`,
			`-conflict lww -lww-column updated_at (on -b): resolve: LWW column "updated_at": public.texts.updated_at is text, not a timestamp`}},
		{"unknown authority field", base("-authority", "customers.emial=a"), []string{`customers.emial=a`, `no column "emial"`}},
		{"unknown authority system", base("-authority", "customers.email=crm"), []string{`unknown system "crm"`}},
		{"bad conflict", base("-conflict", "newest"), []string{`-conflict "newest": want lww, dlq, a-wins or b-wins`}},
		{"bad cdc", base("-cdc", "trigger"), []string{`-cdc "trigger": want logical or poll`}},
		{"public admin without auth", base("-admin", "0.0.0.0:0"), []string{`-admin "0.0.0.0:0" is not a loopback address`}},
		{"same database", base("-b", p.a.URL), []string{"-a and -b connect to the same database"}},
		{"cpu profile not writable", base("-cpu-profile", filepath.Join(t.TempDir(), "missing", "cpu.pprof")), []string{"-cpu-profile: open "}},
		{"missing name", []string{"-a", p.a.URL, "-b", p.b.URL, "-tables", "customers"}, []string{"-name is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := start(t, tc.args...)
			require.Equal(t, 1, pr.exit(t), pr.output())
			for _, w := range tc.want {
				require.Contains(t, pr.stderr.String(), w)
			}
			require.NotContains(t, pr.output(), password)
			require.NotContains(t, pr.stdout.String(), "ready")
		})
	}
	// Nothing was created: no slot, publication or origin.
	var slots, origins int
	require.NoError(t, p.a.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'duplex\_' || $1 || '\_\_%'`, p.name).Scan(&slots))
	require.NoError(t, p.a.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_origin WHERE starts_with(roname, $1)`, "duplex:"+p.name+":").Scan(&origins))
	require.Zero(t, slots+origins, "a refused start creates nothing")
}

// TestPollModeWithAdminLogin runs pgbisync with -cdc poll (no replication
// slots; echoes recognised by content) and an admin login from the
// environment: edits both ways converge, the DLQ API wants the login while
// /metrics and /healthz do not, and the admin password is never printed.
func TestPollModeWithAdminLogin(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	const adminPassword = "Adm-93b2-letmein"
	admin := freeAddr(t)
	pr := startEnv(t, []string{"PGBISYNC_ADMIN_PASSWORD=" + adminPassword},
		"-a", p.a.URL, "-b", p.b.URL, "-tables", "customers,orders", "-name", p.name,
		"-authority", "customers.name=a,customers.payment_status=b", "-conflict", "b-wins",
		"-cdc", "poll", "-poll-interval", "50ms", "-poll-deletes", "tombstones",
		"-admin", admin, "-admin-user", "ops")
	pr.waitReady(t)
	require.Contains(t, pr.stdout.String(), "cdc=poll")
	// The first pass reads every row as new (the seeded rows, equal on both
	// sides, settle as no-ops); edit once it is acknowledged both ways, so
	// the edits are changes to rows the sync has seen.
	waitMetrics(t, admin, `duplex_acked_total{direction="a_to_b"}`, `duplex_acked_total{direction="b_to_a"}`)

	ctx := t.Context()
	// Different rows on each side: with polling, a row both sides edit
	// within one pass can lose one side's edit (the content loop guard takes
	// the merged row for the sync's own write; see the package doc).
	_, err := p.a.Pool.Exec(ctx, `UPDATE customers SET name = 'polled from a', updated_at = clock_timestamp() WHERE id <= 3`)
	require.NoError(t, err)
	_, err = p.b.Pool.Exec(ctx, `UPDATE customers SET payment_status = 'active', updated_at = clock_timestamp() WHERE id BETWEEN 4 AND 5`)
	require.NoError(t, err)
	_, err = p.b.Pool.Exec(ctx, `INSERT INTO orders (customer_id, order_no, amount) VALUES (4, 1, 10), (4, 2, 20)`)
	require.NoError(t, err)
	_, err = p.a.Pool.Exec(ctx, `DELETE FROM customers WHERE id = 19`)
	require.NoError(t, err)
	rows := waitEqual(t, p, customersQ, pr)
	require.Contains(t, rows, `(3,"polled from a",c3@example.com,trial,`)
	require.Contains(t, rows, `(4,"customer 4",c4@example.com,active,`)
	require.NotContains(t, rows, "(19,")
	require.Equal(t, 2, strings.Count(waitEqual(t, p, ordersQ, pr), "(4,"))

	code, _ := get(t, "http://"+admin+"/dlq")
	require.Equal(t, http.StatusUnauthorized, code, "the DLQ API wants the login")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/dlq", nil)
	require.NoError(t, err)
	req.SetBasicAuth("ops", adminPassword)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	code, _ = get(t, "http://"+admin+"/healthz")
	require.Equal(t, http.StatusOK, code)
	waitMetrics(t, admin, `duplex_changes_applied_total{direction="a_to_b",table="public.customers"}`,
		`duplex_changes_applied_total{direction="b_to_a",table="public.orders"} 2`)

	pr.stopWith(t, os.Interrupt)
	require.NotContains(t, pr.output(), adminPassword)
	var slots int
	require.NoError(t, p.a.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database IN ($1, $2)`, p.a.Name, p.b.Name).Scan(&slots))
	require.Zero(t, slots, "-cdc poll uses no replication slot")
}

// lockBackend returns the backend holding pgbisync's lock on db and the
// lock's key, found through pg_locks by the application name pgbisync sets.
func lockBackend(t *testing.T, db *testenv.DB, name, side string) (pid int32, key int64) {
	t.Helper()
	err := db.Pool.QueryRow(t.Context(), `
		SELECT l.pid, (l.classid::bigint << 32) | l.objid::bigint
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database() AND a.application_name = $1`,
		"pgbisync:"+name+":"+side).Scan(&pid, &key)
	require.NoError(t, err)
	return pid, key
}

// TestKeepsItsLockAndStopsWhenItIsTaken checks the guard against two syncs
// with one name: pgbisync takes its lock again when the session holding it
// is lost, and stops (non-zero, saying why) when another session took the
// lock in the meantime.
func TestKeepsItsLockAndStopsWhenItIsTaken(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	pr := start(t, "-a", p.a.URL, "-b", p.b.URL, "-tables", "customers", "-name", p.name, "-conflict", "dlq", "-lock-check", "100ms")
	pr.waitReady(t)
	ctx := t.Context()

	// A lost session: pgbisync notices and takes the lock again.
	pid, _ := lockBackend(t, p.a, p.name, "a")
	_, err := p.a.Pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	waitFor(t, "pgbisync to take its lock again", func() bool { return strings.Contains(pr.stderr.String(), `msg="took the sync lock again" side=a`) })
	newPID, key := lockBackend(t, p.a, p.name, "a")
	require.NotEqual(t, pid, newPID)
	_, err = p.a.Pool.Exec(ctx, `UPDATE customers SET name = 'still syncing' WHERE id = 1`)
	require.NoError(t, err)
	require.Contains(t, waitEqual(t, p, customersQ, pr), "still syncing")

	// Another session queues for the lock; when pgbisync's session is lost
	// that one gets it, and pgbisync must stop rather than run beside it.
	thief, err := pgx.Connect(ctx, p.a.URL)
	require.NoError(t, err)
	defer thief.Close(context.Background())
	var thiefPID int32
	require.NoError(t, thief.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&thiefPID))
	locked := make(chan error, 1)
	go func() {
		_, err := thief.Exec(context.Background(), `SELECT pg_advisory_lock($1)`, key)
		locked <- err
	}()
	waitFor(t, "the other session to wait for the lock", func() bool {
		var waiting bool
		require.NoError(t, p.a.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)`, thiefPID).Scan(&waiting))
		return waiting
	})
	_, err = p.a.Pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, newPID)
	require.NoError(t, err)
	require.NoError(t, <-locked)
	require.Equal(t, 1, pr.exit(t), pr.output())
	require.Contains(t, pr.stderr.String(), "pgbisync: stopped: lost the sync lock on -a: -a: another pgbisync with -name "+p.name+" is already running")
}
