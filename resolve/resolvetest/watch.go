package resolvetest

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
)

// Call is what a resolver was shown and what it decided, recorded during
// the Resolve call (a Conflict must not be kept after it).
type Call struct {
	Dir         string // "a->b"
	Kind        duplex.ConflictKind
	Op          duplex.Op
	Key         string
	Fields      []string               // Conflict.Fields
	Conflicting []string               // Conflict.Conflicting
	Picks       map[string]duplex.Pick // the decision on each of Fields
	Values      map[string]any         // the value of each field decided with Set
	Dead        string                 // the dead-letter reason, if any
	Err         string                 // the error Resolve returned, if any
	SourceTime  time.Time
	TargetTime  time.Time
}

// String is one line: direction, kind, op, key, fields and decisions.
func (c Call) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s fields=%v conflicting=%v", c.Dir, c.Kind, c.Op, c.Key, c.Fields, c.Conflicting)
	for _, f := range c.Fields {
		fmt.Fprintf(&b, " %s:%s", f, c.Picks[f])
		if v, ok := c.Values[f]; ok {
			fmt.Fprintf(&b, "=%v", v)
		}
	}
	if c.Dead != "" {
		fmt.Fprintf(&b, " dead=%q", c.Dead)
	}
	if c.Err != "" {
		fmt.Fprintf(&b, " err=%q", c.Err)
	}
	return b.String()
}

// watch wraps the resolver under test: it records every call and, as
// violations, the calls that modify their input, decide a field outside
// decides (nil: any field), decide an input seen before (in memo)
// differently, or panic. A panicking call dead-letters the change, so that
// the run goes on and reports it.
type watch struct {
	next    duplex.Resolver
	decides map[string]bool
	memo    *memo

	mu   sync.Mutex
	log  []Call
	errs []string
}

func newWatch(next duplex.Resolver, decides []string) *watch {
	w := &watch{next: next, memo: &memo{seen: map[string]string{}}}
	if decides != nil {
		w.decides = map[string]bool{}
		for _, f := range decides {
			w.decides[f] = true
		}
	}
	return w
}

func (w *watch) Resolve(ctx context.Context, c *duplex.Conflict) (err error) {
	before := inputOf(c)
	decided := decisionsOf(c)
	defer func() {
		if r := recover(); r != nil {
			w.violate("resolver panicked on %s: %v\n%s", c, r, debug.Stack())
			c.DeadLetter(fmt.Sprintf("resolvetest: the resolver panicked: %v", r), "resolvetest")
			err = nil
		}
		w.check(c, before, decided)
		w.remember(c, before, decided, err)
		w.record(c, err)
	}()
	if w.next == nil {
		return nil
	}
	return w.next.Resolve(ctx, c)
}

// check records the violations of one call: a changed input, a decision
// on an undeclared field.
func (w *watch) check(c *duplex.Conflict, before string, decided map[string]string) {
	if after := inputOf(c); after != before {
		w.violate("resolver modified its input on %s:\n  before: %s\n  after:  %s", c, before, after)
	}
	if w.decides == nil {
		return
	}
	for f, d := range decisionsOf(c) {
		if d != decided[f] && !w.decides[f] {
			w.violate("resolver decided field %q on %s (%s), which it does not declare (Config.Decides %v)", f, c, d, slices.Sorted(maps.Keys(w.decides)))
		}
	}
}

// remember checks the call's decisions against those of an earlier call
// on the same input (the conflict as shown, with the decisions made before
// the resolver), and records them.
func (w *watch) remember(c *duplex.Conflict, before string, decided map[string]string, err error) {
	result := snapshot(decisionsOf(c)) + " dead=" + strconv.Quote(c.DeadLettered())
	if err != nil {
		result += " err=" + strconv.Quote(err.Error())
	}
	if earlier, ok := w.memo.put(before+" "+snapshot(decided), result); ok && earlier != result {
		w.violate("resolver decided the same input differently on %s: the resolver is not deterministic\n  input: %s\n  first: %s\n  then:  %s", c, before, earlier, result)
	}
}

func (w *watch) violate(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, fmt.Sprintf(format, args...))
}

func (w *watch) record(c *duplex.Conflict, err error) {
	call := Call{
		Dir: c.Direction.From + "->" + c.Direction.To, Kind: c.Kind, Op: c.Change.Op, Key: c.Change.Key.String(),
		Fields: c.Fields(), Conflicting: c.Conflicting(), Picks: map[string]duplex.Pick{}, Values: map[string]any{},
		Dead: c.DeadLettered(), SourceTime: c.SourceTime, TargetTime: c.TargetTime,
	}
	if err != nil {
		call.Err = err.Error()
	}
	for _, f := range call.Fields {
		p, v := c.Decision(f)
		call.Picks[f] = p
		if p == duplex.UseValue {
			call.Values[f] = v
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = append(w.log, call)
}

func (w *watch) calls() []Call {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.log)
}

func (w *watch) violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.errs)
}

// inputOf is a deep snapshot of what a resolver is shown and must not
// modify: everything in the Conflict but the decisions.
func inputOf(c *duplex.Conflict) string {
	return snapshot(struct {
		Direction     duplex.Direction
		Kind          duplex.ConflictKind
		Change        *duplex.Change
		Current       duplex.Values
		SourceTime    time.Time
		TargetTime    time.Time
		BaseUncertain bool
	}{c.Direction, c.Kind, c.Change, c.Current, c.SourceTime, c.TargetTime, c.BaseUncertain})
}

// decisionsOf returns the decision on every field at stake (those the
// source changed and those only the target changed), as text.
func decisionsOf(c *duplex.Conflict) map[string]string {
	out := map[string]string{}
	for _, f := range append(c.Fields(), c.TargetOnly()...) {
		p, v := c.Decision(f)
		out[f] = p.String()
		if p == duplex.UseValue {
			out[f] += " " + snapshot(v)
		}
	}
	return out
}

// memo holds the decisions made on each input, across the Pairs of one
// check.
type memo struct {
	mu   sync.Mutex
	seen map[string]string
}

// put records result for input unless one is recorded already, and
// returns the earlier one.
func (m *memo) put(input, result string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if earlier, ok := m.seen[input]; ok {
		return earlier, true
	}
	m.seen[input] = result
	return "", false
}
