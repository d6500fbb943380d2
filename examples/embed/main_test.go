package main_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ddl = `CREATE TABLE customers (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	email text NOT NULL,
	plan text NOT NULL DEFAULT 'free',
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO customers (id, name, email) VALUES (1, 'Ada', 'ada@example.com'), (2, 'Bob', 'bob@example.com');`

// TestEmbedConvergesATwoWayEdit runs the program on two fresh databases: an
// edit on the CRM reaches billing, an edit on billing reaches the CRM, and
// SIGINT stops it with status 0.
func TestEmbedConvergesATwoWayEdit(t *testing.T) {
	t.Parallel()
	crm, billing := testenv.Postgres(t), testenv.Postgres(t)
	testenv.RequireLogical(t, crm)
	for _, db := range []*testenv.DB{crm, billing} {
		_, err := db.Pool.Exec(t.Context(), ddl)
		require.NoError(t, err)
	}
	name := testenv.UniqueName(t, "embed")
	t.Cleanup(func() { dropOrigins(t, crm.Pool, "duplex:"+name+":") })
	bin := filepath.Join(t.TempDir(), "embed")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	cmd := exec.Command(bin, "-name", name, "-crm", crm.URL, "-billing", billing.URL)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := sync.OnceValue(cmd.Wait)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = exited()
	})
	lines := bufio.NewScanner(stdout)
	require.True(t, lines.Scan(), "no output; stderr:\n%s", &stderr)
	require.Equal(t, "embed: ready", lines.Text())
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	ctx := t.Context()
	_, err = crm.Pool.Exec(ctx, `UPDATE customers SET name = 'Ada Lovelace', updated_at = clock_timestamp() WHERE id = 1`)
	require.NoError(t, err)
	waitFor(t, billing.Pool, `SELECT name FROM customers WHERE id = 1`, "Ada Lovelace")
	_, err = billing.Pool.Exec(ctx, `UPDATE customers SET plan = 'pro', updated_at = clock_timestamp() WHERE id = 2`)
	require.NoError(t, err)
	waitFor(t, crm.Pool, `SELECT plan FROM customers WHERE id = 2`, "pro")

	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	require.NoError(t, exited(), "stderr:\n%s", &stderr)
}

// waitFor polls query on pool until it returns want, for up to a minute.
func waitFor(t *testing.T, pool *pgxpool.Pool, query, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var got string
	for time.Now().Before(deadline) {
		require.NoError(t, pool.QueryRow(t.Context(), query).Scan(&got))
		if got == want {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling another process's effect
	}
	t.Fatalf("%s: got %q after a minute, want %q", query, got, want)
}

// dropOrigins removes the sync's replication origins (cluster-wide; the
// databases' cleanup drops the slots).
func dropOrigins(t *testing.T, pool *pgxpool.Pool, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pool.Exec(ctx, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE starts_with(roname, $1)`, prefix); err != nil {
		t.Errorf("drop replication origins %s*: %v", prefix, err)
	}
}

// TestREADMEShowsCompiledCode checks that the README's Go blocks marked
// with the file they come from are that code, verbatim: the block after
// "<!-- examples/embed/main.go -->" is this program, and the block after
// "<!-- FILE: REGION -->" the lines of FILE between "// README: REGION"
// and "// README: end", one tab less indented. So the README's examples
// compile, and this test keeps them in step with the code.
func TestREADMEShowsCompiledCode(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	marker := regexp.MustCompile("(?m)^<!-- ([^ :]+\\.go)(?:: ([a-z]+))? -->\n```go\n((?s:.*?))\n```\n")
	blocks := marker.FindAllSubmatch(readme, -1)
	var files []string
	for _, b := range blocks {
		file, region, block := string(b[1]), string(b[2]), string(b[3])
		files = append(files, file)
		src, err := os.ReadFile(filepath.Join("../..", file))
		require.NoError(t, err, "README.md shows %s", file)
		want := strings.TrimSuffix(string(src), "\n")
		if region != "" {
			want = readmeRegion(t, file, string(src), region)
		}
		require.Equal(t, want, block, "README.md's block marked %s %s differs from the code: copy it into the README", file, region)
	}
	require.Contains(t, files, "examples/embed/main.go")
	require.Contains(t, files, "duplexpg/example_test.go")
}

// readmeRegion returns the lines of src between "// README: region" and
// "// README: end", one tab less indented.
func readmeRegion(t *testing.T, file, src, region string) string {
	t.Helper()
	_, after, ok := strings.Cut(src, "// README: "+region+"\n")
	require.True(t, ok, "%s has no region %q", file, region)
	body, _, ok := strings.Cut(after, "// README: end\n")
	require.True(t, ok, "%s: region %q does not end", file, region)
	lines := strings.Split(strings.TrimRight(body, "\t\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	return strings.Join(lines, "\n")
}
