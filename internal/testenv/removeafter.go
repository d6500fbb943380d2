package testenv

import (
	"os"
	"testing"
)

// RemoveAfter returns m with a Run that removes dir (and everything in
// it) once the tests have run: for a TestMain that builds into a temporary
// directory, as in goleak.VerifyTestMain(testenv.RemoveAfter(m, dir)).
func RemoveAfter(m *testing.M, dir string) interface{ Run() int } {
	return removeAfter{m: m, dir: dir}
}

// removeAfter is RemoveAfter's testing.M.
type removeAfter struct {
	m   *testing.M
	dir string
}

// Run runs the tests, then removes the directory.
func (r removeAfter) Run() int {
	defer os.RemoveAll(r.dir)
	return r.m.Run()
}
