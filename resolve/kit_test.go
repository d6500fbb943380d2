package resolve_test

import (
	"io"
	"log/slog"
	"testing"

	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve/resolvetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The scenario tests of the package play edits on resolvetest's items
// replicas "a" and "b".

var (
	items = resolvetest.Items().Table
	epoch = resolvetest.Epoch
)

func id(i int64) duplex.Key { return resolvetest.Items().KeyOf(i) }

// row builds an items row with the given fields; the rest are NULL.
func row(key int64, kv ...any) duplex.Values { return resolvetest.Items().Row(key, kv...) }

type (
	pair     = resolvetest.Pair
	scenario = resolvetest.Scenario
)

// pairOption adjusts the kit's Config of a scenario.
type pairOption func(*resolvetest.Config)

// withCommitTimes makes the replicas report rows' commit times: the newest
// change each row reflects.
func withCommitTimes() pairOption {
	return func(c *resolvetest.Config) { c.Times = resolvetest.ChangeTimes }
}

// withXminTimes makes the replicas report the commit time of each row's
// last write, as applypg does.
func withXminTimes() pairOption {
	return func(c *resolvetest.Config) { c.Times = resolvetest.WriteTimes }
}

// withBatch sets the source batch size.
func withBatch(n int) pairOption { return func(c *resolvetest.Config) { c.Batch = n } }

func config(r func() duplex.Resolver, opts []pairOption) resolvetest.Config {
	c := resolvetest.Config{NewResolver: r}
	for _, o := range opts {
		o(&c)
	}
	return c
}

func newPair(t testing.TB, r duplex.Resolver, opts ...pairOption) *pair {
	return resolvetest.NewPair(t, config(func() duplex.Resolver { return r }, opts), r)
}

func bothWays(t testing.TB, r func() duplex.Resolver, sc scenario, opts ...pairOption) (resolvetest.Outcome, *pair) {
	t.Helper()
	return resolvetest.BothWays(t, config(r, opts), sc)
}

// decisions returns the picks of the recorded conflicts seen in direction dir.
func decisions(calls []resolvetest.Call, dir string) []map[string]duplex.Pick {
	var out []map[string]duplex.Pick
	for _, s := range calls {
		if s.Dir == dir {
			out = append(out, s.Picks)
		}
	}
	return out
}

// itemColumns are the columns of items.
var itemColumns = []string{"id", "name", "note", "n", "f", "tags", "ts"}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))
