package main_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/internal/testenv"
)

// TestDemoConverges builds the demo, runs it for a few seconds against the
// test PostgreSQL and Redis, and checks its verdict.
func TestDemoConverges(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t) // server discovery, and an admin URL to reach it
	testenv.RequireLogical(t, db)
	rd := testenv.Redis(t)
	bin := filepath.Join(t.TempDir(), "crmbilling")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	prefix := testenv.UniqueName(t, "demo") + "_"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE starts_with(roname, $1)", "duplex:"+prefix)
		// The demo's Redis dedup keys (duplex:<sync>:...).
		iter := rd.Client.Scan(ctx, 0, "duplex:"+prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			_ = rd.Client.Del(ctx, iter.Val()).Err()
		}
		for _, side := range []string{"crm", "billing"} {
			_, _ = conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1", prefix+side)
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{prefix + side}.Sanitize()+" WITH (FORCE)")
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	admin := l.Addr().String()
	l.Close()
	cmd := exec.CommandContext(ctx, bin, "-pg", db.URL, "-db-prefix", prefix, "-redis", rd.URL,
		"-admin", admin, "-duration", "6s", "-rows", "50", "-rate", "30")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	require.NoError(t, cmd.Start())
	// While it runs, the admin serves the DLQ UI, its JSON API and metrics.
	var page, api, metrics string
	deadline := time.Now().Add(2 * time.Minute)
	for page == "" || api == "" || !strings.Contains(metrics, "duplex_changes_applied_total") {
		require.True(t, time.Now().Before(deadline), "admin server not reachable on %s", admin)
		time.Sleep(200 * time.Millisecond)
		page, api, metrics = get(t, "http://"+admin+"/"), get(t, "http://"+admin+"/dlq"), get(t, "http://"+admin+"/metrics")
	}
	require.Contains(t, page, "<html")
	require.Contains(t, api, `"entries"`)
	require.NoError(t, cmd.Wait(), "demo failed:\n%s", buf.String())
	text := buf.String()
	require.Contains(t, text, "verdict: converged", text)
	require.True(t, strings.Contains(text, "compared 50 customers on crm with 50 on billing"), text)
}

// get returns the body of a successful GET, or "" when it fails.
func get(t *testing.T, u string) string {
	resp, err := http.Get(u)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}
