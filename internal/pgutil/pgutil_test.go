package pgutil_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
	"github.com/duplexsync/duplex/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func pgErr(code string) error {
	return &pgconn.PgError{Severity: "ERROR", Code: code, Message: "test " + code}
}

type safeToRetry struct{}

func (safeToRetry) Error() string     { return "not sent" }
func (safeToRetry) SafeToRetry() bool { return true }

func TestClassify(t *testing.T) {
	t.Parallel()
	unknown := errors.New("something else")
	netErr := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	tests := []struct {
		name string
		err  error
		want duplex.ErrorClass
		same bool // returned unchanged
	}{
		{"nil", nil, duplex.ClassUnknown, true},
		{"unknown error", unknown, duplex.ClassUnknown, true},
		{"unknown SQLSTATE", pgErr("XX000"), duplex.ClassUnknown, true},
		{"short SQLSTATE", pgErr("08"), duplex.ClassUnknown, true},

		{"08000 connection_exception", pgErr("08000"), duplex.ClassUnavailable, false},
		{"08006 connection_failure", pgErr("08006"), duplex.ClassUnavailable, false},
		{"08P01 protocol_violation", pgErr("08P01"), duplex.ClassUnavailable, false},
		{"57P01 admin_shutdown", pgErr("57P01"), duplex.ClassUnavailable, false},
		{"57P02 crash_shutdown", pgErr("57P02"), duplex.ClassUnavailable, false},
		{"57P03 cannot_connect_now", pgErr("57P03"), duplex.ClassUnavailable, false},
		{"53300 too_many_connections", pgErr("53300"), duplex.ClassUnavailable, false},

		{"40001 serialization_failure", pgErr("40001"), duplex.ClassTransient, false},
		{"40P01 deadlock_detected", pgErr("40P01"), duplex.ClassTransient, false},
		{"55P03 lock_not_available", pgErr("55P03"), duplex.ClassTransient, false},
		{"53200 out_of_memory", pgErr("53200"), duplex.ClassTransient, false},
		{"53400 configuration_limit_exceeded", pgErr("53400"), duplex.ClassTransient, false},

		{"22001 string_data_right_truncation", pgErr("22001"), duplex.ClassPermanent, false},
		{"22P02 invalid_text_representation", pgErr("22P02"), duplex.ClassPermanent, false},
		{"23505 unique_violation", pgErr("23505"), duplex.ClassPermanent, false},
		{"23514 check_violation", pgErr("23514"), duplex.ClassPermanent, false},
		{"42501 insufficient_privilege", pgErr("42501"), duplex.ClassPermanent, false},
		{"42P01 undefined_table", pgErr("42P01"), duplex.ClassPermanent, false},
		{"44000 with_check_option_violation", pgErr("44000"), duplex.ClassPermanent, false},
		{"wrapped 23505", fmt.Errorf("apply: %w", pgErr("23505")), duplex.ClassPermanent, false},

		{"55006 object_in_use is not classified", pgErr("55006"), duplex.ClassUnknown, true},
		{"2BP01 dependent_objects_still_exist is not classified", pgErr("2BP01"), duplex.ClassUnknown, true},
		{"57014 query_canceled is not classified", pgErr("57014"), duplex.ClassUnknown, true},

		{"context.Canceled", context.Canceled, duplex.ClassUnavailable, true},
		{"wrapped context.DeadlineExceeded", fmt.Errorf("query: %w", context.DeadlineExceeded), duplex.ClassUnavailable, true},
		{"io.EOF", io.EOF, duplex.ClassUnavailable, false},
		{"wrapped io.ErrUnexpectedEOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), duplex.ClassUnavailable, false},
		{"net.Error", netErr, duplex.ClassUnavailable, false},
		{"net.ErrClosed", fmt.Errorf("write: %w", net.ErrClosed), duplex.ClassUnavailable, false},
		{"SafeToRetry", safeToRetry{}, duplex.ClassUnavailable, false},

		{"already classified is kept", duplex.Permanent(pgErr("40001")), duplex.ClassPermanent, true},
		{"already classified transient is kept", duplex.Transient(io.EOF), duplex.ClassTransient, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := pgutil.Classify(tc.err)
			require.Equal(t, tc.want, duplex.ClassOf(got), "class of %v", got)
			if tc.same {
				require.Equal(t, tc.err, got, "returned unchanged")
				return
			}
			require.ErrorIs(t, got, tc.err, "the classified error wraps the original")
			if want := pgutil.SQLState(tc.err); want != "" {
				require.Equal(t, want, pgutil.SQLState(got), "errors.As still finds the PgError")
			}
		})
	}
}

func TestClassOfCode(t *testing.T) {
	t.Parallel()
	for code, want := range map[string]duplex.ErrorClass{
		"08001": duplex.ClassUnavailable, "08003": duplex.ClassUnavailable, "57P03": duplex.ClassUnavailable,
		"40001": duplex.ClassTransient, "53400": duplex.ClassTransient,
		"22012": duplex.ClassPermanent, "23503": duplex.ClassPermanent, "42703": duplex.ClassPermanent, "44000": duplex.ClassPermanent,
		"": duplex.ClassUnknown, "XX000": duplex.ClassUnknown, "25P02": duplex.ClassUnknown, "53100": duplex.ClassUnknown,
	} {
		require.Equal(t, want, pgutil.ClassOfCode(code), "code %q", code)
	}
}

// TestClassifyServerErrors classifies errors a real server and driver produce.
func TestClassifyServerErrors(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	_, err := db.Pool.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, n int CHECK (n >= 0))`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO t VALUES (1, 1)`)
	require.NoError(t, err)

	permanent := map[string]string{
		"SELECT 1/0":                        "22012",
		"INSERT INTO t VALUES (1, 2)":       "23505",
		"INSERT INTO t VALUES (2, -1)":      "23514",
		"SELECT nope FROM t":                "42703",
		"SELECT 'x'::int":                   "22P02",
		"INSERT INTO missing VALUES (1)":    "42P01",
		"SELECT '2024-13-01'::date":         "22008",
		"SELECT repeat('x', 3)::varchar(2)": "", // an explicit cast truncates: no error
	}
	for sql, code := range permanent {
		_, err := db.Pool.Exec(ctx, sql)
		if code == "" {
			require.NoError(t, err, sql)
			continue
		}
		err = pgutil.Classify(err)
		require.Equal(t, code, pgutil.SQLState(err), sql)
		require.True(t, duplex.IsPermanent(err), "%s: %v", sql, err)
	}

	// A terminated session: the server says 57P01 or the connection just
	// ends; either way the endpoint is unavailable, not the change at fault.
	conn, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var pid int32
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
	_, err = db.Pool.Exec(ctx, "SELECT pg_terminate_backend($1, 10000)", pid)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SELECT 1")
	require.Error(t, err)
	require.True(t, duplex.IsUnavailable(pgutil.Classify(err)), "after pg_terminate_backend: %v", err)
	_, err = conn.Exec(ctx, "SELECT 1")
	require.Error(t, err)
	require.True(t, duplex.IsUnavailable(pgutil.Classify(err)), "on a closed connection: %v", err)

	// Nobody listens.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = pgconn.Connect(cctx, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
	require.Error(t, err)
	require.True(t, duplex.IsUnavailable(pgutil.Classify(err)), "connection refused: %v", err)

	// A database that does not accept connections refuses with a server
	// error (55000) wrapped in the connect error: unavailable too.
	_, err = db.Pool.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{db.Name + "_closed"}.Sanitize()+` ALLOW_CONNECTIONS false`)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = db.Pool.Exec(context.Background(), `DROP DATABASE IF EXISTS `+pgx.Identifier{db.Name + "_closed"}.Sanitize())
	})
	closedURL := strings.Replace(db.URL, "/"+db.Name+"?", "/"+db.Name+"_closed?", 1)
	require.NotEqual(t, db.URL, closedURL)
	_, err = pgconn.Connect(cctx, closedURL)
	require.Error(t, err)
	require.Equal(t, "55000", pgutil.SQLState(err), "%v", err)
	require.True(t, duplex.IsUnavailable(pgutil.Classify(err)), "database not accepting connections: %v", err)

	// A canceled query keeps its context error.
	qctx, qcancel := context.WithCancel(ctx)
	qcancel()
	_, err = db.Pool.Exec(qctx, "SELECT 1")
	require.ErrorIs(t, pgutil.Classify(err), context.Canceled)
	require.False(t, duplex.IsPermanent(pgutil.Classify(err)))
}

func TestQuote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"items":         `"items"`,
		"Mixed Case":    `"Mixed Case"`,
		`say "hi"`:      `"say ""hi"""`,
		"":              `""`,
		"a\x00b":        `"ab"`,
		"select":        `"select"`,
		`back\slash`:    `"back\slash"`,
		"ünïcode":       `"ünïcode"`,
		`x"; DROP t;--`: `"x""; DROP t;--"`,
	} {
		require.Equal(t, want, pgutil.QuoteIdent(in), "QuoteIdent(%q)", in)
	}
	require.Equal(t, `"public"."items"`, pgutil.QuoteTable(duplex.Table{Schema: "public", Name: "items"}))
	require.Equal(t, `"my ""s"""."T.x"`, pgutil.QuoteTable(duplex.Table{Schema: `my "s"`, Name: "T.x"}))
	require.Equal(t, `"items"`, pgutil.QuoteTable(duplex.Table{Name: "items"}))
}

// TestQuoteRoundTrip creates tables with awkward names through QuoteTable.
func TestQuoteRoundTrip(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	for _, tb := range []duplex.Table{
		{Schema: `we"ird`, Name: `Ta ble"; --`},
		{Schema: "public", Name: "select"},
		{Schema: "public", Name: "ünï"},
	} {
		_, err := db.Pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgutil.QuoteIdent(tb.Schema))
		require.NoError(t, err)
		_, err = db.Pool.Exec(ctx, "CREATE TABLE "+pgutil.QuoteTable(tb)+" ("+pgutil.QuoteIdent(`co"l`)+" int)")
		require.NoError(t, err, tb.String())
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2`, tb.Schema, tb.Name).Scan(&n))
		require.Equal(t, 1, n, tb.String())
	}
}
