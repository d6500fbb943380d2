package main

import (
	"bytes"
	"io"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// TestOutputHidesPasswordsInEveryForm writes messages carrying the
// passwords of the flags, raw and URL-escaped, through the filter that
// guards stdout and stderr.
func TestOutputHidesPasswordsInEveryForm(t *testing.T) {
	t.Parallel()
	const pa, pb, pr, padmin = "p@ss:w/rd?", "kv-secret", "redis-pw", "admin-pw"
	u := url.URL{Scheme: "postgres", User: url.UserPassword("root", pa), Host: "127.0.0.1", Path: "/db_a"}
	c := &config{
		a: u.String(), b: "host=127.0.0.1 password='" + pb + "' dbname=b",
		redisURL: "redis://:" + pr + "@127.0.0.1:6379/0", adminPassword: padmin,
	}
	var buf bytes.Buffer
	w := &redactingWriter{w: &buf, secrets: c.secrets()}
	for _, msg := range []string{c.a, c.b, c.redisURL, pa, url.QueryEscape(pa), url.PathEscape(pa), pb, pr, padmin} {
		n, err := io.WriteString(w, "error: "+msg+"\n")
		require.NoError(t, err)
		require.Equal(t, len("error: "+msg+"\n"), n)
	}
	out := buf.String()
	for _, secret := range []string{pa, url.QueryEscape(pa), url.PathEscape(pa), "p%40ss", pb, pr, padmin} {
		require.NotContains(t, out, secret)
	}
	require.Contains(t, out, "postgres://root:xxxxx@127.0.0.1/db_a")
}

func TestParseTables(t *testing.T) {
	t.Parallel()
	got, err := parseTables(" public.customers, orders ,Billing.Invoices")
	require.NoError(t, err)
	require.Equal(t, []duplex.Table{{Schema: "public", Name: "customers"}, {Schema: "public", Name: "orders"}, {Schema: "Billing", Name: "Invoices"}}, got)
	_, err = parseTables("customers,public.customers")
	require.ErrorContains(t, err, "public.customers is listed twice")
	_, err = parseTables("a.b.c")
	require.ErrorContains(t, err, `"a.b.c" is not schema.table or table`)
	_, err = parseTables(" , ")
	require.ErrorContains(t, err, "-tables is required")
}

func TestCheckFlags(t *testing.T) {
	t.Parallel()
	ok := []string{"-a", "postgres://h/a", "-b", "postgres://h/b", "-tables", "customers", "-name", "demo"}
	for _, tc := range []struct {
		extra []string
		want  string // "" when valid
	}{
		{nil, ""},
		{[]string{"-admin", "127.0.0.1:8089"}, ""},
		{[]string{"-admin", "localhost:8089"}, ""},
		{[]string{"-admin", "[::1]:8089"}, ""},
		{[]string{"-admin", "0.0.0.0:8089", "-admin-user", "ops", "-admin-password", "pw"}, ""},
		{[]string{"-admin", "0.0.0.0:8089"}, "is not a loopback address"},
		{[]string{"-admin", ":8089"}, "is not a loopback address"},
		{[]string{"-admin-user", "ops"}, "-admin-user and -admin-password"},
		{[]string{"-skew", "-1ms"}, "-skew -1ms: the clock-skew tolerance must not be negative"},
		{[]string{"-conflict", "a_wins"}, `-conflict "a_wins"`},
		{[]string{"-cdc", "trigger"}, `-cdc "trigger"`},
		{[]string{"-name", "my-sync"}, `-name "my-sync" is not usable`},
		{[]string{"-poll-deletes", "all"}, `-poll-deletes "all"`},
		{[]string{"-log-level", "loud"}, `-log-level "loud"`},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		_, err := parseFlags(append(append([]string(nil), ok...), tc.extra...), io.Discard)
		if tc.want == "" {
			require.NoError(t, err, tc.extra)
		} else {
			require.ErrorContains(t, err, tc.want, tc.extra)
		}
	}
}
