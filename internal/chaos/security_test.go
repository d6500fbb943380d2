package chaos_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/internal/testenv"
)

// hostile is a table name built to break SQL made by string concatenation.
const hostile = `a"; drop table x; --`

func TestChaosHostileIdentifiers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	tbl := pgx.Identifier{"public", hostile}.Sanitize()
	for _, db := range []*testenv.DB{e.a, e.b} {
		_, err := db.Pool.Exec(t.Context(), `CREATE TABLE x (id int PRIMARY KEY);
			CREATE TABLE `+tbl+` (
				"id"" OR 1=1; --" bigint PRIMARY KEY,
				"we""ird" text,
				"select" text,
				updated_at timestamptz NOT NULL DEFAULT clock_timestamp())`)
		require.NoError(t, err)
	}
	p := e.spawn(nil, "-a", e.a.URL, "-b", e.b.URL, "-tables", "public."+hostile,
		"-conflict", "a-wins", "-admin", e.admin, "-name", e.name)
	p.waitReady(t)
	values := []string{`'); DROP TABLE x; --`, `"; DELETE FROM x; --`, `\x00'`, "<script>alert(1)</script>"}
	for i, v := range values {
		_, err := e.a.Pool.Exec(t.Context(), `INSERT INTO `+tbl+` ("id"" OR 1=1; --", "we""ird", "select") VALUES ($1, $2, $2)`, i+1, strings.ReplaceAll(v, "\x00", ""))
		require.NoError(t, err)
	}
	q := `SELECT string_agg(t::text, E'\n' ORDER BY t."id"" OR 1=1; --") FROM ` + tbl + ` t`
	deadline := time.Now().Add(60 * time.Second)
	updated := false
	for {
		if !updated {
			tag, err := e.b.Pool.Exec(t.Context(), `UPDATE `+tbl+` SET "select" = 'from b' WHERE "id"" OR 1=1; --" = 1`)
			require.NoError(t, err)
			updated = tag.RowsAffected() == 1
		}
		var ra, rb string
		require.NoError(t, e.a.Pool.QueryRow(t.Context(), `SELECT coalesce((`+q+`), '')`).Scan(&ra))
		require.NoError(t, e.b.Pool.QueryRow(t.Context(), `SELECT coalesce((`+q+`), '')`).Scan(&rb))
		if ra == rb && strings.Contains(ra, "from b") && strings.Count(ra, "\n") == len(values)-1 {
			break
		}
		require.True(t, time.Now().Before(deadline), "hostile table did not sync:\na: %s\nb: %s\n%s", ra, rb, tail(p.output(), 3000))
		time.Sleep(200 * time.Millisecond)
	}
	for _, db := range []*testenv.DB{e.a, e.b} {
		var n int
		require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'x'`).Scan(&n))
		require.Equal(t, 1, n, "table x survives")
	}
	body := httpGet(t, "http://"+e.admin+"/metrics")
	require.Contains(t, body, `a\"; drop table x; --`, "metric labels carry the name, escaped")
	p.stop(t)
}

// withPassword returns raw (a URL) with a password set.
func withPassword(t *testing.T, raw, password string) string {
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

func TestChaosPasswordsNeverShown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	const secret = "Sup3r-S3cret-pw"
	// This server trusts local connections, so the password is accepted
	// and ignored: enough to see whether it leaks.
	a, b := withPassword(t, e.a.URL, secret), withPassword(t, e.b.URL, secret)
	args := func(more ...string) []string {
		return append([]string{"-a", a, "-b", b, "-tables", "public.customers,public.events",
			"-admin", e.admin, "-name", e.name, "-log-level", "debug"}, more...)
	}
	p := e.spawn(nil, args()...)
	p.waitReady(t)
	_, err := e.a.Pool.Exec(t.Context(), `UPDATE customers SET name = 'x', updated_at = clock_timestamp() WHERE id = 1`)
	require.NoError(t, err)
	v := e.converge(p)
	for _, path := range []string{"/metrics", "/healthz", "/", "/dlq"} {
		require.NotContains(t, httpGet(t, "http://"+e.admin+path), secret, "GET %s shows the password", path)
	}
	p.stop(t)
	require.NotContains(t, p.output(), secret)

	// Failures print connection strings too: an unreachable server, a
	// refused -redis, a missing database.
	bad := [][]string{
		{"-b", "postgres://root:" + secret + "@127.0.0.1:1/nodb"},
		{"-redis", "redis://:" + secret + "@127.0.0.1:1/0"},
		{"-b", withPassword(t, strings.Replace(e.b.URL, e.b.Name, "no_such_db", 1), secret)},
		{"-a", "host=127.0.0.1 port=1 user=root password=" + secret + " dbname=x"},
	}
	for _, more := range bad {
		q := e.spawn(nil, args(more...)...)
		code := q.exitCode(t, 60*time.Second)
		require.NotEqual(t, 0, code)
		require.NotContains(t, q.output(), secret, "exit output of %v", more[0])
	}
	t.Logf("CHAOS passwords: %s; 4 failing starts, none shows the password", v)
}

func TestChaosLeastPrivilegeRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 50)
	role := testenv.UniqueName(t, "duplex_sync")
	ident := pgx.Identifier{role}.Sanitize()
	// What a superuser prepares once (docs/least-privilege.md): a role
	// with REPLICATION, the replication origin functions, the tables'
	// privileges, REPLICA IDENTITY FULL and the publications (both need
	// table ownership, which the sync's role does not get).
	_, err := e.a.Pool.Exec(t.Context(), `CREATE ROLE `+ident+` LOGIN REPLICATION`)
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, db := range []*testenv.DB{e.a, e.b} {
			_, _ = db.Pool.Exec(t.Context(), `DROP OWNED BY `+ident)
		}
		_, _ = e.a.Pool.Exec(t.Context(), `DROP ROLE IF EXISTS `+ident)
	})
	for side, db := range map[string]*testenv.DB{"a": e.a, "b": e.b} {
		stmts := []string{
			`GRANT CONNECT, CREATE ON DATABASE ` + pgx.Identifier{db.Name}.Sanitize() + ` TO ` + ident,
			`GRANT USAGE ON SCHEMA public TO ` + ident,
			`GRANT SELECT, INSERT, UPDATE, DELETE ON customers, events TO ` + ident,
			`ALTER TABLE customers REPLICA IDENTITY FULL`,
			`ALTER TABLE events REPLICA IDENTITY FULL`,
			`CREATE PUBLICATION ` + pgx.Identifier{"duplex_" + e.name + "__" + side}.Sanitize() + ` FOR TABLE customers, events`,
			`GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_session_setup(text),
				pg_replication_origin_session_reset(), pg_replication_origin_xact_setup(pg_lsn, timestamptz),
				pg_replication_origin_oid(text), pg_replication_origin_drop(text),
				pg_replication_origin_session_is_setup(), pg_replication_origin_progress(text, boolean) TO ` + ident,
		}
		for _, s := range stmts {
			_, err := db.Pool.Exec(t.Context(), s)
			require.NoError(t, err, s)
		}
	}
	as := func(raw string) string {
		u, err := url.Parse(raw)
		require.NoError(t, err)
		u.User = url.User(role)
		return u.String()
	}
	p := e.spawn(nil, "-a", as(e.a.URL), "-b", as(e.b.URL), "-tables", "public.customers,public.events",
		"-authority", "customers.name=a,customers.email=a,customers.payment_status=b",
		"-no-replica-identity", "-admin", e.admin, "-name", e.name)
	p.waitReady(t)
	var super bool
	require.NoError(t, e.a.Pool.QueryRow(t.Context(), `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, role).Scan(&super))
	require.False(t, super)
	w := e.write(100, [2]time.Duration{})
	time.Sleep(3 * time.Second)
	writes := w.halt()
	v := e.converge(p)
	report(t, fmt.Sprintf("running as %s (not a superuser)", role), writes, v)
	p.stop(t)
}
