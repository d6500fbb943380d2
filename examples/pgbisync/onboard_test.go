package main_test

import (
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestOnboardsOnFirstStartAndResumesAfterKill is the scenario,
// scaled down: a holds customers 1-2,000, b 1,501-2,500 (200 equal to
// a's, 300 different). pgbisync starts, is SIGKILLed while onboarding (once
// a chunk committed on a), and is started again: it goes on after a's
// progress ("resumed"), copies the one-sided rows, records the equal ones,
// decides the different ones by -conflict a-wins, prints a report line and
// then "ready"; both sides end equal and the DLQ empty. /healthz and
// /metrics show the onboarding.
func TestOnboardsOnFirstStartAndResumesAfterKill(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	ctx := t.Context()
	_, err := p.a.Pool.Exec(ctx, `TRUNCATE customers;
		INSERT INTO customers (id, name, email, updated_at) SELECT i, 'customer ' || i, 'c' || i || '@example.com', '2026-01-01' FROM generate_series(1, 2000) i`)
	require.NoError(t, err)
	_, err = p.b.Pool.Exec(ctx, `TRUNCATE customers;
		INSERT INTO customers (id, name, email, updated_at) SELECT i, 'customer ' || i, 'c' || i || '@example.com', '2026-01-01' FROM generate_series(1501, 2500) i;
		UPDATE customers SET name = 'b-name ' || id WHERE id BETWEEN 1701 AND 2000`)
	require.NoError(t, err)
	admin := freeAddr(t)
	args := []string{"-a", p.a.URL, "-b", p.b.URL, "-tables", "public.customers", "-conflict", "a-wins",
		"-onboarding-chunk", "50", "-admin", admin, "-name", p.name}
	first := start(t, args...)
	progress := func() string {
		var exists bool
		// The state schema appears when pgbisync creates it.
		require.NoError(t, p.a.Pool.QueryRow(ctx, `SELECT to_regclass('duplex.checkpoints') IS NOT NULL`).Scan(&exists))
		if !exists {
			return ""
		}
		var pos string
		err := p.a.Pool.QueryRow(ctx, `SELECT position FROM duplex.checkpoints WHERE sync = $1 AND target = 'a' AND source = 'onboarding:public.customers'`, p.name).Scan(&pos)
		if errors.Is(err, pgx.ErrNoRows) {
			return ""
		}
		require.NoError(t, err)
		return pos
	}
	waitFor(t, "a chunk committed on a", func() bool {
		select {
		case <-first.done:
			t.Fatalf("pgbisync exited:\n%s", first.output())
		default:
		}
		return progress() != ""
	})
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGKILL))
	<-first.done
	killedAt := progress()
	if killedAt == "done" || strings.Contains(first.stdout.String(), "pgbisync: onboarded") {
		t.Skip("onboarding finished before the kill landed")
	}

	second := start(t, args...)
	second.waitReady(t)
	out := second.stdout.String()
	require.Contains(t, out, "pgbisync: onboarded public.customers: ", out)
	require.Contains(t, second.stderr.String(), `msg="onboarding started" sync=`+p.name+` table=public.customers resumed=true`)
	require.Equal(t, "done", progress())
	rows := waitEqual(t, p, customersQ, second)
	require.Equal(t, 2500, len(strings.Split(rows, "\n")))
	require.NotContains(t, rows, "b-name", "a wins the differing rows")
	require.Empty(t, dlqList(t, admin, ""))
	code, body := get(t, "http://"+admin+"/healthz")
	require.Equal(t, http.StatusOK, code, body)
	metrics := waitMetrics(t, admin, `duplex_onboarding_running{table="public.customers"} 0`)
	require.Contains(t, metrics, `duplex_onboarding_rows_total{outcome="compared",table="public.customers"}`)
	// Agreements of every key on both sides, one version.
	var na, nb int
	require.NoError(t, p.a.Pool.QueryRow(ctx, `SELECT count(*) FROM duplex.agreements WHERE sync = $1 AND tbl = 'public.customers'`, p.name).Scan(&na))
	require.NoError(t, p.b.Pool.QueryRow(ctx, `SELECT count(*) FROM duplex.agreements WHERE sync = $1 AND tbl = 'public.customers'`, p.name).Scan(&nb))
	require.Equal(t, 2500, na)
	require.Equal(t, 2500, nb)
	// A restart does not onboard again.
	second.stop(t)
	third := start(t, args...)
	third.waitReady(t)
	require.NotContains(t, third.stdout.String(), "pgbisync: onboarded")
	third.stop(t)
}
