package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgstate"
)

// The two-way mode (-mode twoway, issue 18) runs the customers workloads
// through the real examples/pgbisync binary at its default flags and, where
// PostgreSQL 15 can, through native logical replication, alternating.

// pgbisyncReady is the line pgbisync prints on stdout once both directions
// stream (examples/pgbisync readyLine).
const pgbisyncReady = "pgbisync: ready"

// pgbisyncTables are the tables pgbisync syncs in the two-way workloads:
// the customers and both marker tables (their copies on the target fill
// arrived by default, as with native apply).
var pgbisyncTables = []string{"public.customers", "public.marks_ab", "public.marks_ba"}

// buildPgbisync builds examples/pgbisync into dir and returns the binary's
// path.
func buildPgbisync(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "pgbisync")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/duplexsync/duplex/examples/pgbisync").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build examples/pgbisync: %w: %s", err, out)
	}
	return bin, nil
}

// pgbisyncApps are the application_names of pgbisync's pool connections
// for sync name (examples/pgbisync connect), by which the benchmark finds
// its server backends.
func pgbisyncApps(name string) []string {
	return []string{"pgbisync:" + name + ":a", "pgbisync:" + name + ":b"}
}

// startPgbisync starts the pgbisync binary bin on the pair with its
// default flags (last-writer-wins on updated_at, PostgreSQL ledger, dlqpg
// dead-letter queue on A, metrics) and the pair's sync name, writing a CPU
// profile to profile unless it is empty, and waits until it is ready.
func startPgbisync(ctx context.Context, c *cluster, bin string, p *pair, profile string, verbose bool) (*syncProc, error) {
	args := []string{"-a", c.dbURL(p.a, nil), "-b", c.dbURL(p.b, nil), "-name", p.sync,
		"-tables", strings.Join(pgbisyncTables, ","), "-log-level", "warn"}
	if profile != "" {
		args = append(args, "-cpu-profile", profile)
	}
	return startProc(ctx, exec.Command(bin, args...), pgbisyncReady, verbose)
}

// dlqTable is the dead-letter table pgbisync creates on database A
// (dlqpg with its default schema).
var dlqTable = pgx.Identifier{pgstate.DefaultSchema, "dead_letters"}.Sanitize()

// deadLetters returns how many dead letters sync has put in database A's
// dead-letter table.
func deadLetters(ctx context.Context, a *pgxpool.Pool, sync string) (int, error) {
	var n int
	if err := a.QueryRow(ctx, "SELECT count(*) FROM "+dlqTable+" WHERE sync = $1", sync).Scan(&n); err != nil {
		return 0, fmt.Errorf("count the dead letters of %s in %s: %w", sync, dlqTable, err)
	}
	return n, nil
}

// deadLetterKeys returns the keys (duplex.Key.String) of table that have a
// pending dead letter of sync in database A.
func deadLetterKeys(ctx context.Context, a *pgxpool.Pool, sync, table string) (map[string]bool, error) {
	rows, err := a.Query(ctx, "SELECT DISTINCT change_key FROM "+dlqTable+" WHERE sync = $1 AND table_name = $2 AND status = 'pending'", sync, "public."+table)
	if err != nil {
		return nil, fmt.Errorf("read the dead-lettered keys of %s: %w", sync, err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the dead-lettered keys of %s: %w", sync, err)
	}
	out := make(map[string]bool, len(keys))
	for _, k := range keys {
		out[k] = true
	}
	return out, nil
}

// diffRows compares the full row sets of the pair's table on a and b and
// returns the ids of the rows that differ or exist on one side only.
func diffRows(ctx context.Context, p *pair) ([]int64, error) {
	read := func(pool *pgxpool.Pool, side string) (map[int64]string, error) {
		rows, err := pool.Query(ctx, "SELECT id, md5(t::text) FROM "+p.data.table+" t")
		if err != nil {
			return nil, fmt.Errorf("read %s on %s: %w", p.data.table, side, err)
		}
		out := map[int64]string{}
		var id int64
		var h string
		if _, err := pgx.ForEachRow(rows, []any{&id, &h}, func() error { out[id] = h; return nil }); err != nil {
			return nil, fmt.Errorf("read %s on %s: %w", p.data.table, side, err)
		}
		return out, nil
	}
	a, err := read(p.poolA, "a")
	if err != nil {
		return nil, err
	}
	b, err := read(p.poolB, "b")
	if err != nil {
		return nil, err
	}
	var diff []int64
	for id, h := range a {
		if b[id] != h {
			diff = append(diff, id)
		}
	}
	for id := range b {
		if _, ok := a[id]; !ok {
			diff = append(diff, id)
		}
	}
	slices.Sort(diff)
	return diff, nil
}

// keyString renders id as the dead-letter table's change_key of a
// customers row.
func keyString(id int64) string { return duplex.Key{{Name: "id", Value: id}}.String() }

// waitSame waits (up to timeout) until the pair's table holds the same
// rows on both sides, except rows whose key has a pending dead letter of
// the sync (allowed: a conflict left for an operator), and returns the
// number of differing rows it allowed so. After timeout the error names
// the rows that differ outside the dead-letter queue. at is when the
// successful comparison started: the rows were the same by then.
func waitSame(ctx context.Context, p *pair, allowDeadLetters bool, timeout time.Duration) (allowed int, at time.Time, err error) {
	deadline := time.Now().Add(timeout)
	for {
		at = time.Now()
		diff, err := diffRows(ctx, p)
		if err != nil {
			return 0, at, err
		}
		dead := map[string]bool{}
		if allowDeadLetters && len(diff) > 0 {
			if dead, err = deadLetterKeys(ctx, p.poolA, p.sync, p.data.table); err != nil {
				return 0, at, err
			}
		}
		var lost []int64
		for _, id := range diff {
			if !dead[keyString(id)] {
				lost = append(lost, id)
			}
		}
		if len(lost) == 0 {
			return len(diff), at, nil
		}
		if time.Now().After(deadline) {
			return 0, at, fmt.Errorf("%d rows of %s differ between a and b after %s without a dead letter (ids %v): a change was lost", len(lost), p.data.table, timeout, lost[:min(len(lost), 10)])
		}
		select {
		case <-ctx.Done():
			return 0, at, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pgbenchWrite runs n single-row update transactions of the pair's table
// (dataset.updateOne, on random ids 1..seed) on a with pgbench from
// clients clients.
func pgbenchWrite(ctx context.Context, pgbench string, p *pair, seed, n, clients int) (err error) {
	script, err := os.CreateTemp("", "duplex-bench-*.sql")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.Remove(script.Name())) }()
	body := fmt.Sprintf("\\set id random(1, %d)\n%s;\n", seed, strings.Replace(p.data.updateOne, "$1", ":id", 1))
	if _, err := script.WriteString(body); err != nil {
		return errors.Join(fmt.Errorf("write the pgbench script: %w", err), script.Close())
	}
	if err := script.Close(); err != nil {
		return fmt.Errorf("write the pgbench script: %w", err)
	}
	per := n / clients
	if per*clients != n {
		return fmt.Errorf("pgbench: %d transactions do not split evenly over %d clients", n, clients)
	}
	cmd := exec.CommandContext(ctx, pgbench, "-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)),
		"-t", strconv.Itoa(per), "-f", script.Name(), p.urlA)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench: %w: %s", err, out)
	}
	return nil
}

// contendedFlows are two flows, a -> b and b -> a, that update the same
// rows 1..keys: each transaction picks its rows at random (in id order, so
// that one side's writers never deadlock each other) and is retried when
// it deadlocks with the sync's apply (counted in retries).
func contendedFlows(p *pair, keys int, retries *[2]int64) []*flow {
	write := func(pool *pgxpool.Pool, side int) func(context.Context, int64) (int64, error) {
		return func(ctx context.Context, n int64) (int64, error) {
			n = min(n, int64(keys))
			ids := make([]int64, 0, n)
			for _, k := range rand.Perm(keys)[:n] {
				ids = append(ids, int64(k)+1)
			}
			slices.Sort(ids)
			for {
				_, err := pool.Exec(ctx, p.data.updateKeys, ids)
				var pe *pgconn.PgError
				if errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") {
					retries[side]++
					continue
				}
				if err != nil {
					return 0, fmt.Errorf("update %d contended rows of %s on %s: %w", n, p.data.table, []string{"a", "b"}[side], err)
				}
				return n, nil
			}
		}
	}
	return []*flow{
		{src: p.poolA, dst: p.poolB, table: "marks_ab", write: write(p.poolA, 0)},
		{src: p.poolB, dst: p.poolA, table: "marks_ba", write: write(p.poolB, 1)},
	}
}

// contention offers rate rows/s on each side for d, both sides updating
// the same rows 1..keys (contendedFlows), then measures the time from the writers' stop until
// both sides hold the same rows except dead-lettered keys (waitSame), and
// fails when a row differs outside the dead-letter queue.
func contention(ctx context.Context, p *pair, keys, rate int, d, timeout time.Duration) (map[string]float64, error) {
	var retries [2]int64
	rs, err := runFlows(ctx, contendedFlows(p, keys, &retries), rate, d, timeout)
	if err != nil {
		return nil, err
	}
	diverged, at, err := waitSame(ctx, p, true, timeout)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{"converge_s": at.Sub(rs[0].Stopped).Seconds(), "diverged": float64(diverged),
		"achieved": rs[0].Achieved, "achieved_ba": rs[1].Achieved, "retries": float64(retries[0] + retries[1])}
	m["p50"], m["p99"], m["p50_ba"], m["p99_ba"] = rs[0].P50, rs[0].P99, rs[1].P50, rs[1].P99
	if rs[0].Behind || rs[1].Behind {
		m["incomplete"] = 1
	}
	return m, nil
}

// twoWayFamilies are the -only names of the two-way workloads.
var twoWayFamilies = []string{"bi-catchup", "bi-pgbench", "bi-steady", "bi-twoway", "bi-contention", "bi-bigtx"}

// Goal checks of the two-way table (issue 18).
var (
	atLeastNative = func(_, r float64) bool { return r >= 1 }
	atMost        = func(limit float64) func(v, r float64) bool { return func(v, _ float64) bool { return v <= limit } }
	below         = func(limit float64) func(v, r float64) bool { return func(v, _ float64) bool { return v < limit } }
)

// twoWayWorkloads returns the workloads of the two-way mode at sizes z;
// pgbench is bi-pgbench's writer ("": Go writers).
func twoWayWorkloads(z sizes, timeout time.Duration, pgbench string) []workload {
	both := []string{native, pgbisyncV}
	// held runs write while the replication is stopped, then the
	// catch-up, and checks that the rows are the same on both sides.
	held := func(rows int, key string, write func(context.Context, *pair) error) func(context.Context, *pair, string) (map[string]float64, error) {
		return func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
			o, err := heldCatchUp(ctx, p, rows, func(ctx context.Context) error { return write(ctx, p) }, timeout)
			if err != nil {
				return nil, err
			}
			if !o.Incomplete {
				if _, _, err := waitSame(ctx, p, false, timeout); err != nil {
					return nil, err
				}
			}
			return o.metrics(key), nil
		}
	}
	// steadyBody runs a steady load (on both sides with twoSided) and
	// checks that the rows end up the same on both sides.
	steadyBody := func(twoSided bool) func(context.Context, *pair, string) (map[string]float64, error) {
		return func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
			rs, err := steady(ctx, p, z.seed, z.biRate, z.biSteady, twoSided, timeout)
			if err != nil {
				return nil, err
			}
			if _, _, err := waitSame(ctx, p, false, timeout); err != nil {
				return nil, err
			}
			return steadyMetrics(rs), nil
		}
	}
	pgbenchName := "pgbench"
	writeSmallTx := func(ctx context.Context, p *pair) error {
		return pgbenchWrite(ctx, pgbench, p, z.seed, z.biSmall, z.biClients)
	}
	if pgbench == "" {
		pgbenchName = "Go writers"
		writeSmallTx = func(ctx context.Context, p *pair) error { return writeSmall(ctx, p, z.seed, z.biSmall, z.biClients) }
	}
	catchGoal := ">= 1.0x native (stretch 1.5x)"
	steadyEst := z.biSteady + 12*time.Second
	lag := func(dir, goalP50, goalP99 string, p50, p99 float64, suffix string) []metric {
		var m50, m99 func(v, r float64) bool
		if goalP50 != "" {
			m50 = atMost(p50)
		}
		if goalP99 != "" {
			m99 = atMost(p99)
		}
		return []metric{{"p50" + suffix, dir + " lag p50 ms", false, goalP50, m50}, {"p99" + suffix, dir + " lag p99 ms", false, goalP99, m99}}
	}
	ws := []workload{
		{name: "bi-catchup", variants: both, seed: z.seed, data: customersData, mode: modeTwoWay, held: true,
			estimate: 12*time.Second + time.Duration(z.updates/8)*time.Millisecond,
			body:     held(z.updates, "rows_s", func(ctx context.Context, p *pair) error { return writeUpdates(ctx, p, z.seed, z.updates, z.txRows) }),
			metrics: []metric{{"rows_s", fmt.Sprintf("catch-up rows/s (%d updates in %d-row tx, from the (re)start)", z.updates, z.txRows), true, catchGoal, atLeastNative},
				{"secs", "s from the (re)start until B has all", false, "", nil},
				{"ready_s", "of which s until pgbisync printed ready", false, "", nil}}},
		{name: "bi-pgbench", variants: both, seed: z.seed, data: customersData, mode: modeTwoWay, held: true,
			estimate: 12*time.Second + time.Duration(z.biSmall/2)*time.Millisecond,
			body:     held(z.biSmall, "tx_s", writeSmallTx),
			metrics: []metric{{"tx_s", fmt.Sprintf("catch-up tx/s (%d one-row tx from %d clients, %s)", z.biSmall, z.biClients, pgbenchName), true, catchGoal, atLeastNative},
				{"secs", "s from the (re)start until B has all", false, "", nil},
				{"ready_s", "of which s until pgbisync printed ready", false, "", nil}}},
		{name: "bi-steady", variants: both, seed: z.seed, data: customersData, mode: modeTwoWay, estimate: steadyEst, body: steadyBody(false),
			metrics: append(lag(fmt.Sprintf("%d rows/s on a:", z.biRate), "p50 <= 5 ms", "p99 <= 10 ms", 5, 10, ""),
				metric{"achieved", "achieved rows/s", true, "", nil})},
		{name: "bi-twoway", variants: []string{pgbisyncV}, seed: z.seed, data: customersData, mode: modeTwoWay, twoSided: true, estimate: steadyEst, body: steadyBody(true),
			metrics: append(append(lag(fmt.Sprintf("%d rows/s each side: a->b", z.biRate), "", "p99 <= 20 ms", 0, 20, ""),
				lag("b->a", "", "p99 <= 20 ms", 0, 20, "_ba")...),
				metric{"achieved", "achieved rows/s (a)", true, "", nil}, metric{"achieved_ba", "achieved rows/s (b)", true, "", nil})},
		{name: "bi-contention", variants: []string{pgbisyncV}, seed: z.seed, data: customersData, mode: modeTwoWay, twoSided: true, conflicts: true,
			estimate: steadyEst + 5*time.Second,
			body: func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
				return contention(ctx, p, z.contKeys, z.contRate, z.biSteady, timeout)
			},
			metrics: []metric{
				{"achieved", fmt.Sprintf("achieved rows/s on a (%d keys, %d rows/s offered each side)", z.contKeys, z.contRate), true, "reported", nil},
				{"achieved_ba", "achieved rows/s on b", true, "reported", nil},
				{"dlq", "dead letters", false, "reported", nil},
				{"diverged", "rows differing after convergence (all dead-lettered)", false, "nothing lost (a differing row outside the DLQ fails the run)", nil},
				{"converge_s", "s to converge after the writers stop", false, "", nil},
				{"p99", "a->b lag p99 ms", false, "", nil},
				{"p99_ba", "b->a lag p99 ms", false, "", nil},
				{"retries", "writer transactions retried (deadlock with the apply)", false, "", nil},
			}},
		{name: "bi-bigtx", variants: both, seed: 1000, data: customersData, mode: modeTwoWay, estimate: 10*time.Second + time.Duration(z.big/20)*time.Millisecond,
			body: func(ctx context.Context, p *pair, _ string) (map[string]float64, error) {
				o, err := bigTx(ctx, p, z.big, timeout)
				if err != nil {
					return nil, err
				}
				return o.metrics("rows_s"), nil
			},
			metrics: []metric{{"secs", fmt.Sprintf("%d-row insert tx, s to B", z.big), false, "", nil}, {"rows_s", "rows/s", true, "", nil},
				{"rss_mb", "sync peak RSS MB", false, "< 150 MB", below(150)}}},
	}
	return ws
}
