package chaos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestChaosKillAndRestart SIGKILLs pgbisync under two-sided load (four
// writers per side; see twosided_test.go) and restarts it: 2 kills over
// 10 s of writes in the bounded form, 3 over a minute in the long form.
// Each kill waits (up to a second) for a moment pgbisync has a write
// transaction open on either database. Writers keep writing while pgbisync
// is down; half the time the next kill comes right after the restart,
// while the sync catches up with 1.5-3 s of writes of both sides. Up to
// 2 s after a restart the writers pause until the sync settles and the
// oracle checks both databases (so that a later edit of a key cannot hide
// what a kill did to it), and write on. The schedule (kill times, down
// times, pauses, every writer's writes) follows DUPLEX_CHAOS_SEED. At
// every check both databases must hold exactly the rows the committed
// writes make: no row diverged, no DLQ entry (no single-sided key
// conflicts; authority decides every both-sided edit), no counter drift,
// no deleted row left. Each kill also reports how many merges it left
// half-done (committed on the target, not yet on the source: halfDone).
func TestChaosKillAndRestart(t *testing.T) {
	t.Parallel()
	seed := chaosSeed(t)
	rnd := rand.New(rand.NewPCG(seed, 1))
	e := newEnv(t, pick(600, 3000), "-conflict", "dlq")
	o := newOracle(e.rows)
	o.seededTime(t, e.a)
	p := e.start()
	const writersPerSide = 4
	kills, span := pick(2, 3), pick(10*time.Second, 60*time.Second)
	w := e.writeTwoSided(seed, o, writersPerSide, pick(25, 40))
	// wrote is how long the writers ran, pauses excluded.
	var wrote time.Duration
	resumed := time.Now()
	elapsed := func() time.Duration { return wrote + time.Since(resumed) }
	var worst figures
	checks := 0
	check := func(what string, final bool) {
		f, took := e.settle(p, o, final)
		checks++
		worst = worst.worst(f)
		t.Logf("check %s: %s; settled in %.1fs", what, f, took.Seconds())
	}
	// kill SIGKILLs pgbisync, waits down (writers keep writing) and
	// restarts it.
	var schedule, halves []string
	kill := func(at, down time.Duration) {
		// Within the next second, at a moment pgbisync has a write
		// transaction open on either database.
		how := e.killInTransaction(p, time.Second)
		half, err := e.halfDone(t.Context())
		require.NoError(t, err)
		time.Sleep(down)
		began := time.Now()
		p = e.start()
		schedule = append(schedule, fmt.Sprintf("%.1fs+%dms", at.Seconds(), down.Milliseconds()))
		halves = append(halves, strconv.Itoa(half))
		t.Logf("kill %d/%d at %.1fs %s; %d merges left half-done; down %s, restarted in %s",
			len(schedule), kills, at.Seconds(), how, half, down, time.Since(began).Round(time.Millisecond))
	}
	slot := span / time.Duration(kills)
	for i := 0; i < kills; i++ {
		// One kill at a random point of each slot of the writing time.
		at := time.Duration(i)*slot + time.Duration(float64(slot)*(0.2+0.7*rnd.Float64()))
		time.Sleep(at - elapsed())
		// Half the time the next kill comes while the restarted sync
		// catches up with what was written while it was down (1.5-3.5 s):
		// merges of keys both sides changed, with write-backs, are then in
		// flight.
		catchUp := i+1 < kills && rnd.IntN(2) == 0
		down := time.Duration(rnd.IntN(1500)) * time.Millisecond
		if catchUp {
			down += 1500 * time.Millisecond
		}
		kill(at, down)
		for catchUp {
			i++
			time.Sleep(time.Duration(rnd.IntN(100)) * time.Millisecond)
			catchUp = i+1 < kills && rnd.IntN(2) == 0
			down := time.Duration(rnd.IntN(1500)) * time.Millisecond
			if catchUp {
				down += 1500 * time.Millisecond
			}
			kill(elapsed(), down)
		}
		// Writers write on for a while, then pause for a check.
		time.Sleep(time.Duration(rnd.IntN(2000)) * time.Millisecond)
		w.pause()
		wrote += time.Since(resumed)
		check(fmt.Sprintf("after kill %d/%d", len(schedule), kills), false)
		w.resume()
		resumed = time.Now()
	}
	time.Sleep(span - elapsed())
	writes := w.halt()
	check("at the end", true)
	t.Logf("CHAOS-KILL seed=%d kills=%d at=%s half_done=%s span=%s writers=%dx2 %s; checks=%d; worst: %s",
		seed, kills, strings.Join(schedule, ","), strings.Join(halves, ","), span, writersPerSide, writes, checks, worst)
	p.stop(t)
}

func TestChaosTargetDatabaseUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 200)
	p := e.start()
	w := e.write(150, [2]time.Duration{})
	time.Sleep(2 * time.Second)

	outage := pick(5*time.Second, 30*time.Second)
	admin, err := pgx.Connect(t.Context(), adminURL(t, e.b))
	require.NoError(t, err)
	defer admin.Close(context.Background())
	db := pgx.Identifier{e.b.Name}.Sanitize()
	_, err = admin.Exec(t.Context(), `ALTER DATABASE `+db+` WITH ALLOW_CONNECTIONS false`)
	require.NoError(t, err)
	restore := func() { _, _ = admin.Exec(context.Background(), `ALTER DATABASE `+db+` WITH ALLOW_CONNECTIONS true`) }
	defer restore()
	// Every connection to b goes, the sync's walsender and appliers too.
	until := time.Now().Add(outage)
	for time.Now().Before(until) {
		_, err = admin.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, e.b.Name)
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond)
	}
	restore()
	select {
	case <-p.done:
		t.Fatalf("pgbisync exited during the outage of b: %v\n%s", p.err, tail(p.output(), 3000))
	default:
	}
	time.Sleep(2 * time.Second)
	writes := w.halt()
	v := e.converge(p)
	report(t, fmt.Sprintf("database b refusing connections for %s", outage), writes, v)
	p.stop(t)
}

func TestChaosReplicationConnectionsKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 200)
	p := e.start()
	w := e.write(150, [2]time.Duration{})
	kills := 0
	until := time.Now().Add(pick(8*time.Second, 40*time.Second))
	for time.Now().Before(until) {
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		for _, db := range []string{e.a.Name, e.b.Name} {
			var n int
			require.NoError(t, e.a.Pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots
				WHERE database = $1 AND active_pid IS NOT NULL`, db).Scan(&n))
			kills += n
		}
	}
	writes := w.halt()
	require.Positive(t, kills)
	v := e.converge(p)
	report(t, fmt.Sprintf("%d walsender kills", kills), writes, v)
	p.stop(t)
}

// privateRedis runs a redis-server of its own on a free port, so that
// stopping it does not disturb other tests.
type privateRedis struct {
	port string
	cmd  *exec.Cmd
}

func startRedis(t *testing.T, port string) *privateRedis {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (make services installs it): %v", err)
	}
	cmd := exec.Command(path, "--port", port, "--save", "", "--appendonly", "no", "--bind", "127.0.0.1")
	require.NoError(t, cmd.Start())
	r := &privateRedis{port: port, cmd: cmd}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			r.stop()
			t.Fatalf("redis-server on %s did not start", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

func (r *privateRedis) stop() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

func TestChaosRedisRestart(t *testing.T) {
	t.Parallel()
	_, port, err := net.SplitHostPort(freeAddr(t))
	require.NoError(t, err)
	r := startRedis(t, port)
	defer func() { r.stop() }()
	e := newEnv(t, 200, "-redis", "redis://127.0.0.1:"+port+"/0")
	p := e.start()
	w := e.write(150, [2]time.Duration{})
	time.Sleep(2 * time.Second)
	r.stop()
	down := pick(3*time.Second, 20*time.Second)
	time.Sleep(down)
	r = startRedis(t, port) // back, and empty
	time.Sleep(2 * time.Second)
	writes := w.halt()
	v := e.converge(p)
	report(t, fmt.Sprintf("Redis stopped for %s and restarted empty", down), writes, v)
	require.NotContains(t, p.output(), "panic")
	p.stop(t)
}

func TestChaosClockSkewWithLWW(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 50)
	p := e.start()
	// b's clock runs 2 s ahead: its last_activity edits look newer than a's
	// for 2 s, and "ahead of now" beyond the tolerance goes to the DLQ.
	w := e.write(100, [2]time.Duration{0, 2 * time.Second})
	time.Sleep(pick(6*time.Second, 30*time.Second))
	writes := w.halt()
	v := e.converge(p)
	report(t, "clock of b 2s ahead (LWW, skew 50ms)", writes, v)
	p.stop(t)
}

func TestChaosSecondInstanceRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 20)
	p := e.start()
	second := e.spawn(nil, e.args("-admin", freeAddr(t), "-lock-wait", "1s")...)
	code := second.exitCode(t, 30*time.Second)
	require.NotEqual(t, 0, code)
	require.Contains(t, second.output(), e.name, "the refusal names the sync")
	// The first still syncs.
	_, err := e.a.Pool.Exec(t.Context(), `UPDATE customers SET name = 'after the second' WHERE id = 1`)
	require.NoError(t, err)
	v := e.converge(p)
	var name string
	require.NoError(t, e.b.Pool.QueryRow(t.Context(), `SELECT name FROM customers WHERE id = 1`).Scan(&name))
	require.Equal(t, "after the second", name)
	t.Logf("CHAOS second instance: exit %d: %s; %s", code, firstLine(second.output()), v)
	p.stop(t)
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}

// TestChaosRestartAfterCleanStopResumes checks the same -name resumes:
// writes made while the sync is stopped arrive after the restart, once.
func TestChaosRestartAfterCleanStopResumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 50)
	p := e.start()
	p.stop(t)
	for i := range 100 {
		_, err := e.a.Pool.Exec(t.Context(), `INSERT INTO events (id, side, payload) VALUES ($1, 'a', 'while stopped')`, "stopped-"+strconv.Itoa(i))
		require.NoError(t, err)
	}
	p = e.start()
	v := e.converge(p)
	require.Equal(t, 100, v.events)
	p.stop(t)
}

// TestChaosPollModeKillAndRestart is the kill test with -cdc poll: no
// replication slots, changes found by updated_at, echoes recognised by
// content.
func TestChaosPollModeKillAndRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 200, "-cdc", "poll", "-poll-interval", "100ms")
	p := e.start()
	w := e.write(100, [2]time.Duration{})
	kills := pick(2, 6)
	for range kills {
		time.Sleep(time.Duration(1000+rand.IntN(2000)) * time.Millisecond)
		p.kill()
		time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond)
		p = e.start()
	}
	time.Sleep(time.Second)
	writes := w.halt()
	v := e.converge(p)
	report(t, fmt.Sprintf("-cdc poll, SIGKILL x%d", kills), writes, v)
	p.stop(t)
}
