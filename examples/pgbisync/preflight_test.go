package main_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// TestCheckPrintsTheReportAndRefusesBlockers: -check prints the preflight
// report and exits 0 on the test's customers; a bigserial key on both
// sides is a blocker: -check exits 2 naming the fix, a start is refused
// with status 2 before anything is created, and -sequences=interleave
// starts, arranges the sequences and exports the findings as metrics.
func TestCheckPrintsTheReportAndRefusesBlockers(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	base := []string{"-a", p.a.URL, "-b", p.b.URL, "-name", p.name}
	pr := start(t, append(base, "-tables", "customers", "-check")...)
	require.Equal(t, 0, pr.exit(t), pr.output())
	require.Contains(t, pr.stdout.String(), "preflight: 0 blocker(s)")
	require.Contains(t, pr.stdout.String(), "== public.customers")
	require.NotContains(t, pr.stdout.String(), "ready")

	for _, pool := range []*pgxpool.Pool{p.a.Pool, p.b.Pool} {
		_, err := pool.Exec(t.Context(), `CREATE TABLE tickets (id bigserial PRIMARY KEY, note text)`)
		require.NoError(t, err)
	}
	pr = start(t, append(base, "-tables", "customers,tickets", "-check")...)
	require.Equal(t, 2, pr.exit(t), pr.output())
	require.Contains(t, pr.stdout.String(), "[blocker] sequences: key column id is fed by sequence public.tickets_id_seq on a and public.tickets_id_seq on b")
	require.Contains(t, pr.stdout.String(), "-sequences=interleave (A odd, B even)")
	require.Contains(t, pr.stderr.String(), "pgbisync: preflight found 1 blocker(s); the sync did not start")

	pr = start(t, append(base, "-tables", "customers,tickets")...)
	require.Equal(t, 2, pr.exit(t), pr.output())
	require.Contains(t, pr.stderr.String(), "[blocker] sequences")
	var slots int
	require.NoError(t, p.a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'duplex\_' || $1 || '\_\_%'`, p.name).Scan(&slots))
	require.Zero(t, slots, "a refused start creates nothing")

	admin := freeAddr(t)
	pr = start(t, append(base, "-tables", "customers,tickets", "-sequences", "interleave", "-admin", admin)...)
	pr.waitReady(t)
	require.Contains(t, pr.stderr.String(), "preflight fixed")
	var a, b int64
	require.NoError(t, p.a.Pool.QueryRow(t.Context(), "SELECT nextval('tickets_id_seq')").Scan(&a))
	require.NoError(t, p.b.Pool.QueryRow(t.Context(), "SELECT nextval('tickets_id_seq')").Scan(&b))
	require.Equal(t, int64(1), a%2, "a odd")
	require.Equal(t, int64(0), b%2, "b even")
	waitMetrics(t, admin, `duplex_preflight_findings{check="sequences",severity="fine",table="public.tickets"} 1`,
		`duplex_preflight_findings{check="privileges",severity="fine",table=""} 2`)
	pr.stop(t)
}
