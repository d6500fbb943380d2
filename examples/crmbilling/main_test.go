package main_test

import (
	"context"
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
		for _, side := range []string{"crm", "billing"} {
			_, _ = conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1", prefix+side)
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{prefix + side}.Sanitize()+" WITH (FORCE)")
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-pg", db.URL, "-db-prefix", prefix, "-redis", rd.URL,
		"-admin", "", "-duration", "4s", "-rows", "50", "-rate", "30")
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "demo failed:\n%s", out)
	text := string(out)
	require.Contains(t, text, "verdict: converged", text)
	require.True(t, strings.Contains(text, "compared 50 customers on crm with 50 on billing"), text)
}
