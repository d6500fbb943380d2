package duplex_test

import (
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRootImportsNoDrivers keeps the root package free of database, cache and
// metrics dependencies: they belong in the packages named after their job.
func TestRootImportsNoDrivers(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"jackc/", "redis/", "prometheus/", "testcontainers"} {
			if strings.Contains(dep, banned) {
				t.Errorf("the root package depends on %s", dep)
			}
		}
	}
}
