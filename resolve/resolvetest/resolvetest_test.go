package resolvetest_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
	"github.com/duplexsync/duplex/resolve/resolvetest"
)

func TestMain(m *testing.M) {
	// The tests here expect the kit to fail. Shrinking a failing run to
	// the shortest one is rapid's work, not what they test: a second of it
	// will do, unless -rapid.shrinktime says otherwise.
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.shrinktime" })
	if !set {
		if err := flag.Set("rapid.shrinktime", "1s"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	goleak.VerifyTestMain(m)
}

// failures is a testing.TB that records failures instead of failing the
// test, so that a test can expect the kit to fail.
type failures struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

func (f *failures) add(msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, msg)
}

func (f *failures) Helper()                        {}
func (f *failures) Log(...any)                     {}
func (f *failures) Logf(string, ...any)            {}
func (f *failures) Error(args ...any)              { f.add(fmt.Sprint(args...)) }
func (f *failures) Errorf(format string, a ...any) { f.add(fmt.Sprintf(format, a...)) }
func (f *failures) Fail()                          { f.add("Fail") }
func (f *failures) FailNow()                       { f.add("FailNow"); runtime.Goexit() }
func (f *failures) Fatal(args ...any)              { f.Error(args...); runtime.Goexit() }
func (f *failures) Fatalf(format string, a ...any) { f.Errorf(format, a...); runtime.Goexit() }
func (f *failures) Skip(...any)                    { f.add("Skip"); runtime.Goexit() }
func (f *failures) Skipf(string, ...any)           { f.add("Skip"); runtime.Goexit() }
func (f *failures) SkipNow()                       { f.add("Skip"); runtime.Goexit() }
func (f *failures) Failed() bool                   { f.mu.Lock(); defer f.mu.Unlock(); return len(f.msgs) > 0 }
func (f *failures) Context() context.Context       { return context.Background() }
func (f *failures) report() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.msgs, "\n")
}

// kitFails runs check against a recording TB and returns what it reported;
// it fails the test when check reported nothing. Rapid writes the failing
// case to testdata/rapid under the working directory: it is a temporary
// one here.
func kitFails(t *testing.T, check func(testing.TB)) string {
	t.Helper()
	t.Chdir(t.TempDir())
	f := &failures{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(f)
	}()
	<-done
	require.True(t, f.Failed(), "the kit passed a resolver it must fail")
	return f.report()
}

// mutating takes the source's value of every field, and rewrites the
// source's row on the way.
var mutating = duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
	for _, f := range c.Fields() {
		c.Take(f, "mutating")
		if c.Change.After != nil {
			c.Change.After[f] = "rewritten"
		}
	}
	return nil
})

func TestKitReportsAResolverModifyingItsInput(t *testing.T) {
	out := kitFails(t, func(tb testing.TB) {
		resolvetest.Check(tb, resolvetest.Config{NewResolver: func() duplex.Resolver { return mutating }})
	})
	require.Contains(t, out, "resolver modified its input")
}

func TestKitReportsANondeterministicResolver(t *testing.T) {
	// A coin decides each conflict, the same way for both sides (the merge
	// writes one decision to both), but not the same way twice.
	coin := duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
		for _, f := range c.Conflicting() {
			if rand.N(2) == 0 {
				c.Take(f, "coin")
			} else {
				c.Keep(f, "coin")
			}
		}
		return nil
	})
	out := kitFails(t, func(tb testing.TB) {
		resolvetest.Check(tb, resolvetest.Config{NewResolver: func() duplex.Resolver { return coin }})
	})
	require.Regexp(t, "not deterministic|decided? differently|delivery order changed", out)
}

func TestKitReportsADirectionDependentResolver(t *testing.T) {
	// The side whose change is merged first wins: the delivery order
	// decides.
	first := duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
		for _, f := range c.Conflicting() {
			c.Take(f, "first")
		}
		return nil
	})
	out := kitFails(t, func(tb testing.TB) {
		resolvetest.Check(tb, resolvetest.Config{NewResolver: func() duplex.Resolver { return first }})
	})
	require.Contains(t, out, "the delivery order changed the rows")
}

func TestKitReportsAnUndeclaredField(t *testing.T) {
	out := kitFails(t, func(tb testing.TB) {
		resolvetest.Check(tb, resolvetest.Config{
			NewResolver: func() duplex.Resolver { return resolve.SideWins("a") },
			Decides:     []string{"name"},
		})
	})
	require.Contains(t, out, "which it does not declare (Config.Decides [name])")
}

func TestKitReportsAPanicOnOddInput(t *testing.T) {
	// Assumes note holds a string.
	longer := duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
		if !c.IsConflicting("note") {
			return nil
		}
		s, _ := c.SourceValue("note")
		d, _ := c.TargetValue("note")
		if len(s.(string)) >= len(d.(string)) {
			c.Take("note", "longer")
		} else {
			c.Keep("note", "longer")
		}
		return nil
	})
	out := kitFails(t, func(tb testing.TB) {
		resolvetest.CheckOddInput(tb, resolvetest.Config{NewResolver: func() duplex.Resolver { return longer }})
	})
	require.Contains(t, out, "resolver panicked on")
}

func TestKitPassesAResolverReturningErrorsOnOddInput(t *testing.T) {
	t.Parallel()
	picky := duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
		for _, f := range c.Conflicting() {
			v, _ := c.SourceValue(f)
			if _, ok := v.(string); !ok {
				return fmt.Errorf("picky: field %s of %s is %T, not a string", f, c.Change.Key, v)
			}
		}
		return nil
	})
	resolvetest.CheckOddInput(t, resolvetest.Config{NewResolver: func() duplex.Resolver { return picky }})
}
