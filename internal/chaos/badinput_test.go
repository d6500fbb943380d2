package chaos_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/testenv"
)

// waitDLQ waits until the DLQ holds at least n entries matching keep.
func (e *env) waitDLQ(p *proc, n int, keep func(dlq.Entry) bool) []dlq.Entry {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		entries, err := e.deadLetters(e.t.Context())
		require.NoError(e.t, err)
		var got []dlq.Entry
		for _, en := range entries {
			if keep(en) {
				got = append(got, en)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d of %d DLQ entries after 60s\n%s", len(got), n, tail(p.output(), 3000))
		}
		select {
		case <-p.done:
			e.t.Fatalf("pgbisync exited: %v\n%s", p.err, tail(p.output(), 3000))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func TestChaosSchemaDriftWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 50)
	p := e.start()
	w := e.write(100, [2]time.Duration{})
	time.Sleep(time.Second)
	_, err := e.a.Pool.Exec(t.Context(), `ALTER TABLE customers ADD COLUMN loyalty_tier text`)
	require.NoError(t, err)
	time.Sleep(time.Second) // writers go on across the ALTER
	writes := w.halt()
	// Owned by a, so no conflict can hold these back.
	_, err = e.a.Pool.Exec(t.Context(), `UPDATE customers SET loyalty_tier = 'gold', name = name || ' (gold)' WHERE id <= 10`)
	require.NoError(t, err)
	v := e.converge(p)
	require.Positive(t, metricSum(t, e.admin, "duplex_schema_drift_total"), "the drift is counted")
	var n int
	require.NoError(t, e.b.Pool.QueryRow(t.Context(), `SELECT count(*) FROM customers WHERE name LIKE '%(gold)'`).Scan(&n))
	require.Equal(t, 10, n, "the rest of the drifting changes is applied")
	require.Contains(t, p.output(), "loyalty_tier", "the drift is logged with the field")
	report(t, "column added on a only while running", writes, v)
	p.stop(t)
}

func TestChaosValueTheTargetRejects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 50)
	_, err := e.b.Pool.Exec(t.Context(), `ALTER TABLE customers ADD CONSTRAINT no_forbidden_names CHECK (name <> 'forbidden')`)
	require.NoError(t, err)
	p := e.start()
	_, err = e.a.Pool.Exec(t.Context(), `UPDATE customers SET name = 'forbidden', updated_at = clock_timestamp() WHERE id = 5`)
	require.NoError(t, err)
	_, err = e.a.Pool.Exec(t.Context(), `UPDATE customers SET name = 'fine', updated_at = clock_timestamp() WHERE id = 6`)
	require.NoError(t, err)
	got := e.waitDLQ(p, 1, func(en dlq.Entry) bool { return en.Key() == "id=5" })
	require.Equal(t, "permanent_error", string(got[0].Reason))
	require.Contains(t, got[0].Error, "no_forbidden_names", "the error names the constraint")
	require.Equal(t, "forbidden", got[0].Change.After["name"], "the payload is kept")
	v := e.converge(p)
	var name string
	require.NoError(t, e.b.Pool.QueryRow(t.Context(), `SELECT name FROM customers WHERE id = 6`).Scan(&name))
	require.Equal(t, "fine", name, "changes after the rejected one go on")
	report(t, "CHECK violation on b", "2 updates on a", v)
	p.stop(t)
}

func TestChaosHugeRow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	p := e.start()
	const size = 24 << 20
	_, err := e.a.Pool.Exec(t.Context(), `INSERT INTO events (id, side, payload) VALUES ('huge', 'a', repeat('x', $1) || md5(random()::text))`, size)
	require.NoError(t, err)
	_, err = e.a.Pool.Exec(t.Context(), `INSERT INTO events (id, side, payload) VALUES ('after-huge', 'a', 'small')`)
	require.NoError(t, err)
	v := e.converge(p)
	var la, lb int
	var ha, hb string
	require.NoError(t, e.a.Pool.QueryRow(t.Context(), `SELECT length(payload), md5(payload) FROM events WHERE id = 'huge'`).Scan(&la, &ha))
	require.NoError(t, e.b.Pool.QueryRow(t.Context(), `SELECT length(payload), md5(payload) FROM events WHERE id = 'huge'`).Scan(&lb, &hb))
	require.Equal(t, la, lb)
	require.Equal(t, ha, hb)
	report(t, "a 24 MB row", "2 inserts on a", v)
	p.stop(t)
}

func TestChaosTableRenamedUnderTheSync(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	p := e.start()
	_, err := e.b.Pool.Exec(t.Context(), `ALTER TABLE events RENAME TO events_moved`)
	require.NoError(t, err)
	for i := range 5 {
		_, err = e.a.Pool.Exec(t.Context(), `INSERT INTO events (id, side, payload) VALUES ($1, 'a', 'while renamed')`, "renamed-"+string(rune('0'+i)))
		require.NoError(t, err)
	}
	got := e.waitDLQ(p, 5, func(en dlq.Entry) bool { return en.Change.Table.Name == "events" })
	for _, en := range got {
		require.Contains(t, en.Error, "events", "the error names the table: %s", en.Error)
		require.Equal(t, "while renamed", en.Change.After["payload"], "the payload is kept")
	}
	// Renamed back, the entries can be replayed; later changes flow again.
	_, err = e.b.Pool.Exec(t.Context(), `ALTER TABLE events_moved RENAME TO events`)
	require.NoError(t, err)
	_, err = e.a.Pool.Exec(t.Context(), `INSERT INTO events (id, side, payload) VALUES ('after-rename', 'a', 'back')`)
	require.NoError(t, err)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int
		require.NoError(t, e.b.Pool.QueryRow(t.Context(), `SELECT count(*) FROM events WHERE id = 'after-rename'`).Scan(&n))
		if n == 1 {
			break
		}
		require.True(t, time.Now().Before(deadline), "changes did not flow after the table came back\n%s", tail(p.output(), 3000))
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("CHAOS table renamed on b: 5 inserts on a dead-lettered with %q; later changes flow once it is back", firstLine(got[0].Error))
	p.stop(t)
}

func TestChaosSlotDroppedExternally(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	p := e.start()
	// Something has flowed, so the sync has a stored position.
	_, err := e.a.Pool.Exec(t.Context(), `INSERT INTO events (id, side, payload) VALUES ('before-drop', 'a', 'x')`)
	require.NoError(t, err)
	e.converge(p)
	slot := "duplex_" + e.name + "__a"
	var dropped bool
	deadline := time.Now().Add(30 * time.Second)
	for !dropped && time.Now().Before(deadline) {
		_, _ = e.a.Pool.Exec(t.Context(), `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		_, err := e.a.Pool.Exec(t.Context(), `SELECT pg_drop_replication_slot($1)`, slot)
		dropped = err == nil
	}
	require.True(t, dropped, "could not drop %s", slot)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Logf("still running 60s after the slot was dropped:\n%s", tail(p.output(), 3000))
	}
	code := p.exitCode(t, time.Second)
	require.NotEqual(t, 0, code, "a lost slot must stop the sync, not be re-created silently")
	require.Contains(t, p.output(), slot, "the error names the slot")
	_, err = e.a.Pool.Exec(t.Context(), `INSERT INTO events (id, side, payload) VALUES ('while-dropped', 'a', 'x')`)
	require.NoError(t, err)
	// A restart does not silently start over either: what was written
	// since the slot went is not in any slot.
	again := e.spawn(nil, e.args()...)
	code2 := again.exitCode(t, 60*time.Second)
	t.Logf("CHAOS slot %s dropped externally: exit %d; restart: exit %d: %s", slot, code, code2, lastLines(again.output(), 2))
	require.NotEqual(t, 0, code2, "a restart after the slot was lost must refuse")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func TestChaosInvalidConfiguration(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	for _, db := range []*testenv.DB{e.a, e.b} {
		_, err := db.Pool.Exec(t.Context(), `CREATE TABLE nokey (x int, updated_at timestamptz)`)
		require.NoError(t, err)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown table in the authority map", []string{"-authority", "nosuch.name=a"}, "nosuch"},
		{"unknown field in the authority map", []string{"-authority", "customers.nosuchfield=a"}, "nosuchfield"},
		{"unknown side in the authority map", []string{"-authority", "customers.name=c"}, "customers.name"},
		{"negative skew", []string{"-skew", "-1s"}, "-skew"},
		{"unknown conflict policy", []string{"-conflict", "coinflip"}, "-conflict"},
		{"table without a primary key", []string{"-tables", "public.nokey"}, "nokey"},
		{"missing table", []string{"-tables", "public.nosuch"}, "nosuch"},
		{"bad DSN", []string{"-b", "postgres://root@127.0.0.1:1/nodb"}, "-b"},
	}
	for _, c := range cases {
		p := e.spawn(nil, e.args(c.args...)...)
		code := p.exitCode(t, 60*time.Second)
		require.NotEqual(t, 0, code, "%s: must exit non-zero\n%s", c.name, p.output())
		require.Contains(t, p.output(), c.want, "%s: the message names the culprit", c.name)
		t.Logf("%s: exit %d: %s", c.name, code, lastLines(p.stderr.String(), 1))
	}
	// Nothing was left running or half-created in a way that blocks a good start.
	p := e.start()
	p.stop(t)
}
