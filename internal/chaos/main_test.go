package chaos_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// binary is the pgbisync executable built for this test run.
var binary string

type cleanupRun struct {
	m   *testing.M
	dir string
}

func (c cleanupRun) Run() int {
	defer os.RemoveAll(c.dir)
	return c.m.Run()
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "duplex-chaos")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "pgbisync")
	cmd := exec.Command("go", "build", "-o", binary, "../../examples/pgbisync")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build pgbisync: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(cleanupRun{m, dir})
}
