package deduptest

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// Features describes what an implementation does beyond the common
// contract, turning on the subtests that check it.
type Features struct {
	// Persistent means marks survive a new instance on the same namespace
	// (PostgreSQL, Redis; not Memory): SurvivesNewInstance runs.
	Persistent bool
	// Expires means marks expire TTL after they were made:
	// ExpiresAfterTTL runs.
	Expires bool
	// TTL is the expiry the NewFunc configures when Expires is set. The
	// suite checks that a mark is seen right after it is made and gone
	// within a few TTLs, so it must be long enough for a Mark and a Seen to
	// complete within it (100ms to 1s suits most backends) and short enough
	// to wait for. Required when Expires is set.
	TTL time.Duration
}

// NewFunc returns a Deduper for namespace. Two calls with the same
// namespace must share state (marks made through one are seen by the
// other, as long as the implementation keeps them); different namespaces
// must not. It registers its own cleanup with t.Cleanup and fails t if it
// cannot build the Deduper. When the Features say Expires, the Deduper must
// be configured with Features.TTL.
type NewFunc func(t *testing.T, namespace string) duplex.Deduper

// Run runs the conformance suite against the Deduper built by newFunc. Its
// subtests run in parallel.
func Run(t *testing.T, f Features, newFunc NewFunc) {
	t.Helper()
	if f.Expires && f.TTL <= 0 {
		t.Fatal("deduptest: Features.Expires needs Features.TTL")
	}
	s := &suite{f: f, newFunc: newFunc}
	tests := []struct {
		name string
		run  func(t *testing.T)
		on   bool
	}{
		{"SeenDoesNotMark", s.seenDoesNotMark, true},
		{"MarkThenSeen", s.markThenSeen, true},
		{"SeenAnswersInOrder", s.seenAnswersInOrder, true},
		{"EmptyBatch", s.emptyBatch, true},
		{"MarkTwiceIdempotent", s.markTwiceIdempotent, true},
		{"ConcurrentMark", s.concurrentMark, true},
		{"NamespacesIsolated", s.namespacesIsolated, true},
		{"LargeBatch", s.largeBatch, true},
		{"CanceledContext", s.canceledContext, true},
		{"SurvivesNewInstance", s.survivesNewInstance, f.Persistent},
		{"ExpiresAfterTTL", s.expiresAfterTTL, f.Expires},
	}
	for _, tt := range tests {
		if !tt.on {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t)
		})
	}
}

type suite struct {
	f       Features
	newFunc NewFunc
}

// namespace returns a namespace unique to this run of the subtest.
func namespace(t *testing.T, n int) string {
	name := t.Name()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return fmt.Sprintf("deduptest_%s_%s_%d", strings.ToLower(name), rand.Text()[:8], n)
}

// ids returns n ids unique to this call, like change IDs.
func ids(n int) []string {
	prefix := rand.Text()[:10]
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + "/0/16B" + strconv.Itoa(i) + "#" + strconv.Itoa(i%7)
	}
	return out
}

func (s *suite) new(t *testing.T) duplex.Deduper {
	t.Helper()
	d := s.newFunc(t, namespace(t, 0))
	require.NotNil(t, d, "NewFunc returned nil")
	return d
}

func seen(t *testing.T, d duplex.Deduper, ids []string) []bool {
	t.Helper()
	got, err := d.Seen(t.Context(), ids)
	require.NoError(t, err, "Seen")
	require.Len(t, got, len(ids), "Seen must answer once per id")
	return got
}

func mark(t *testing.T, d duplex.Deduper, ids []string) {
	t.Helper()
	require.NoError(t, d.Mark(t.Context(), ids), "Mark")
}

func all(n int, v bool) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// seenDoesNotMark guards the mark-before-apply bug: asking must not claim,
// or a change whose apply then fails is skipped on redelivery and lost.
func (s *suite) seenDoesNotMark(t *testing.T) {
	ns := namespace(t, 0)
	d := s.newFunc(t, ns)
	id := ids(3)
	require.Equal(t, all(3, false), seen(t, d, id))
	require.Equal(t, all(3, false), seen(t, d, id), "a second Seen must still answer false: Seen marked the ids")
	other := s.newFunc(t, ns)
	require.Equal(t, all(3, false), seen(t, other, id), "another instance on the namespace sees marks made by Seen")
}

func (s *suite) markThenSeen(t *testing.T) {
	d := s.new(t)
	id := ids(4)
	mark(t, d, id[:2])
	require.Equal(t, []bool{true, true, false, false}, seen(t, d, id))
	mark(t, d, id[3:])
	require.Equal(t, []bool{true, true, false, true}, seen(t, d, id))
}

func (s *suite) seenAnswersInOrder(t *testing.T) {
	d := s.new(t)
	id := ids(10)
	var marked []string
	for i, x := range id {
		if i%3 == 0 {
			marked = append(marked, x)
		}
	}
	mark(t, d, marked)
	// Interleaved, with duplicates of both marked and unmarked ids.
	in := []string{id[1], id[0], id[0], id[2], id[3], id[1], id[9], id[8], id[6], id[1], id[3]}
	want := []bool{false, true, true, false, true, false, true, false, true, false, true}
	require.Equal(t, want, seen(t, d, in))
}

func (s *suite) emptyBatch(t *testing.T) {
	d := s.new(t)
	require.Empty(t, seen(t, d, nil))
	require.Empty(t, seen(t, d, []string{}))
	mark(t, d, nil)
	mark(t, d, []string{})
}

func (s *suite) markTwiceIdempotent(t *testing.T) {
	d := s.new(t)
	id := ids(5)
	mark(t, d, id[:3])
	mark(t, d, id[:3])
	mark(t, d, []string{id[2], id[3], id[3], id[2]}) // overlapping, duplicates within the batch
	require.Equal(t, []bool{true, true, true, true, false}, seen(t, d, id))
}

func (s *suite) concurrentMark(t *testing.T) {
	ns := namespace(t, 0)
	d := s.newFunc(t, ns)
	other := s.newFunc(t, ns) // a second instance on the namespace, as with several processes
	const workers, per, step = 8, 200, 50
	id := ids(step*(workers-1) + per)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	for w := range workers {
		dd := d
		if w%2 == 1 {
			dd = other
		}
		mine := id[w*step : w*step+per] // overlaps its neighbours' ids
		wg.Go(func() {
			for i := 0; i < len(mine); i += 20 {
				batch := mine[i:min(i+20, len(mine))]
				if err := dd.Mark(t.Context(), batch); err != nil {
					fail(fmt.Errorf("worker %d: Mark: %w", w, err))
					return
				}
				got, err := dd.Seen(t.Context(), batch)
				if err != nil {
					fail(fmt.Errorf("worker %d: Seen: %w", w, err))
					return
				}
				for j, ok := range got {
					if !ok {
						fail(fmt.Errorf("worker %d: %s not seen right after its Mark", w, batch[j]))
					}
				}
			}
		})
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, all(len(id), true), seen(t, d, id))
}

func (s *suite) namespacesIsolated(t *testing.T) {
	d1 := s.newFunc(t, namespace(t, 1))
	d2 := s.newFunc(t, namespace(t, 2))
	id := ids(3)
	mark(t, d1, id[:2])
	require.Equal(t, []bool{false, false, false}, seen(t, d2, id), "marks leaked into another namespace")
	mark(t, d2, id[1:])
	require.Equal(t, []bool{true, true, false}, seen(t, d1, id))
	require.Equal(t, []bool{false, true, true}, seen(t, d2, id))
}

func (s *suite) largeBatch(t *testing.T) {
	d := s.new(t)
	const n = 10_000
	id := ids(n)
	var even []string
	for i := 0; i < n; i += 2 {
		even = append(even, id[i])
	}
	mark(t, d, even)
	got := seen(t, d, id)
	for i, ok := range got {
		require.Equal(t, i%2 == 0, ok, "id %d of %d", i, n)
	}
	mark(t, d, id)
	require.Equal(t, all(n, true), seen(t, d, id))
}

// canceledContext: a canceled ctx may fail the call or be ignored, but must
// not panic, must not make Seen mark, and must not give wrong answers.
func (s *suite) canceledContext(t *testing.T) {
	d := s.new(t)
	id := ids(4)
	mark(t, d, id[:1])
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	got, err := d.Seen(ctx, id[:2])
	if err == nil {
		require.Equal(t, []bool{true, false}, got, "Seen with a canceled ctx answered wrongly")
	}
	require.Equal(t, []bool{true, false, false, false}, seen(t, d, id), "Seen with a canceled ctx marked")

	if err := d.Mark(ctx, id[2:3]); err == nil {
		require.Equal(t, []bool{true, false, true, false}, seen(t, d, id), "Mark with a canceled ctx returned nil without marking")
	}
	require.False(t, seen(t, d, id[3:])[0])

	dctx, dcancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer dcancel()
	if got, err := d.Seen(dctx, id[3:]); err == nil {
		require.Equal(t, []bool{false}, got)
	}
	require.False(t, seen(t, d, id[3:])[0], "Seen with an expired deadline marked")
}

func (s *suite) survivesNewInstance(t *testing.T) {
	ns := namespace(t, 0)
	id := ids(3)
	mark(t, s.newFunc(t, ns), id[:2])
	require.Equal(t, []bool{true, true, false}, seen(t, s.newFunc(t, ns), id), "marks lost with the instance")
}

func (s *suite) expiresAfterTTL(t *testing.T) {
	d := s.new(t)
	id := ids(2)
	mark(t, d, id[:1])
	require.Equal(t, []bool{true, false}, seen(t, d, id), "a mark must be seen within its TTL (Features.TTL too short?)")
	wait := 10*s.f.TTL + 5*time.Second
	tick := max(s.f.TTL/10, time.Millisecond)
	require.Eventually(t, func() bool {
		got, err := d.Seen(t.Context(), id[:1])
		return err == nil && len(got) == 1 && !got[0]
	}, wait, tick, "mark still seen long after its TTL of %s", s.f.TTL)
	// An expired id can be marked again.
	mark(t, d, id[:1])
	require.Equal(t, []bool{true, false}, seen(t, d, id))
}
