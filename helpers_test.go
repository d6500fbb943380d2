package duplex_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

var customers = duplex.Table{Schema: "public", Name: "customers"}

func key(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }

var columns = []string{"id", "name", "n", "note"}

// newDB returns a memdb with a customers table (id, name, n, note and any
// extra columns; n must be >= 0 when check is true).
func newDB(t testing.TB, name string, check bool, extra ...string) *memdb.DB {
	t.Helper()
	db := memdb.New(name)
	opts := memdb.TableOptions{Key: []string{"id"}, Columns: append(append([]string(nil), columns...), extra...)}
	if check {
		opts.Check = func(row duplex.Values) error {
			if n, ok := row["n"].(int64); ok && n < 0 {
				return errors.New("n must be >= 0")
			}
			return nil
		}
	}
	require.NoError(t, db.CreateTable(customers, opts))
	return db
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// deadLetters is a DeadLetterSink that keeps entries in memory.
type deadLetters struct {
	mu      sync.Mutex
	entries []duplex.DeadLetter
	fail    func(*duplex.DeadLetter) error
}

func (d *deadLetters) Put(_ context.Context, l *duplex.DeadLetter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		if err := d.fail(l); err != nil {
			return err
		}
	}
	for i := range d.entries {
		if d.entries[i].Change.ID == l.Change.ID && d.entries[i].Direction == l.Direction {
			d.entries[i] = *l
			return nil
		}
	}
	d.entries = append(d.entries, *l)
	return nil
}

func (d *deadLetters) all() []duplex.DeadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]duplex.DeadLetter(nil), d.entries...)
}

func (d *deadLetters) ids() map[string]bool {
	out := map[string]bool{}
	for _, e := range d.all() {
		out[e.Change.ID] = true
	}
	return out
}

// faultyApplier wraps an Applier, failing Apply calls as told and counting
// the writes that committed per change ID.
type faultyApplier struct {
	next   duplex.Applier
	ledger duplex.Ledger

	mu      sync.Mutex
	calls   int
	fail    func(call int, b *duplex.Batch) error // nil: pass
	applied map[string]int
	order   []string
}

func newFaulty(next *memdb.Applier) *faultyApplier {
	return &faultyApplier{next: next, ledger: next, applied: map[string]int{}}
}

func (f *faultyApplier) Applied(ctx context.Context, ids []string) ([]bool, error) {
	return f.ledger.Applied(ctx, ids)
}

func (f *faultyApplier) Lookup(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	return f.next.Lookup(ctx, t, keys)
}

func (f *faultyApplier) Apply(ctx context.Context, b *duplex.Batch) error {
	f.mu.Lock()
	f.calls++
	call, fail := f.calls, f.fail
	f.mu.Unlock()
	if fail != nil {
		if err := fail(call, b); err != nil {
			return err
		}
	}
	if err := f.next.Apply(ctx, b); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range b.Writes {
		f.applied[w.Change.ID]++
		f.order = append(f.order, w.Change.ID)
	}
	return nil
}

func (f *faultyApplier) Agreements(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Agreement, error) {
	return f.next.(duplex.AgreementKeeper).Agreements(ctx, t, keys)
}

func (f *faultyApplier) Checkpoint(ctx context.Context, source string) (duplex.Position, error) {
	if cp, ok := f.next.(duplex.Checkpointer); ok {
		return cp.Checkpoint(ctx, source)
	}
	return "", nil
}

func (f *faultyApplier) setFail(fn func(call int, b *duplex.Batch) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

func (f *faultyApplier) appliedIDs() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.applied))
	for k, v := range f.applied {
		out[k] = v
	}
	return out
}

// recordingSource wraps a ChangeSource, optionally delivering every batch
// twice, and records deliveries and acknowledgements.
type recordingSource struct {
	next  duplex.ChangeSource
	twice bool

	mu        sync.Mutex
	delivered []duplex.Change
	acks      []duplex.Position
	onAck     func(p duplex.Position, delivered []duplex.Change)
}

func (s *recordingSource) Stream(ctx context.Context, from duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	return s.next.Stream(ctx, from, func(ctx context.Context, b []duplex.Change) error {
		s.mu.Lock()
		s.delivered = append(s.delivered, b...)
		s.mu.Unlock()
		if err := fn(ctx, append([]duplex.Change(nil), b...)); err != nil {
			return err
		}
		if s.twice {
			s.mu.Lock()
			s.delivered = append(s.delivered, b...)
			s.mu.Unlock()
			return fn(ctx, append([]duplex.Change(nil), b...))
		}
		return nil
	})
}

func (s *recordingSource) Ack(ctx context.Context, p duplex.Position) error {
	s.mu.Lock()
	s.acks = append(s.acks, p)
	if s.onAck != nil {
		s.onAck(p, s.delivered)
	}
	s.mu.Unlock()
	return s.next.Ack(ctx, p)
}

func (s *recordingSource) lastAck() duplex.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.acks) == 0 {
		return ""
	}
	return s.acks[len(s.acks)-1]
}

// eventLog is an Observer that counts events.
type eventLog struct {
	duplex.NopObserver
	mu        sync.Mutex
	applied   int
	retried   int
	conflicts map[string]int
	dead      map[duplex.Reason]int
	skipped   map[duplex.SkipReason]int
	drift     []string
}

func newEventLog() *eventLog {
	return &eventLog{conflicts: map[string]int{}, dead: map[duplex.Reason]int{}, skipped: map[duplex.SkipReason]int{}}
}

func (e *eventLog) Applied(_ context.Context, ev duplex.AppliedEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.applied += ev.Count
}

func (e *eventLog) Retried(context.Context, duplex.RetriedEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.retried++
}

func (e *eventLog) Conflicted(_ context.Context, ev duplex.ConflictEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.conflicts[ev.Kind.String()+"/"+string(ev.Resolution)]++
}

func (e *eventLog) DeadLettered(_ context.Context, ev duplex.DeadLetterEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dead[ev.Reason]++
}

func (e *eventLog) Skipped(_ context.Context, ev duplex.SkippedEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.skipped[ev.Reason] += ev.Count
}

func (e *eventLog) Drifted(_ context.Context, ev duplex.DriftEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.drift = append(e.drift, ev.Table.String()+"."+ev.Field)
}

func (e *eventLog) snapshot() (applied, retried int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.applied, e.retried
}

// fastOptions keeps retries quick in tests.
func fastOptions() duplex.Options {
	return duplex.Options{
		BatchSize:       64,
		MaxAttempts:     4,
		MinBackoff:      time.Millisecond,
		MaxBackoff:      5 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
	}
}

// runUntilDone runs p until its (StopWhenIdle) source is drained and all
// changes are settled, failing the test after timeout.
func runUntilDone(t testing.TB, p *duplex.Pipeline) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, p.Run(ctx))
	require.NoError(t, ctx.Err(), "pipeline did not finish in time")
}

// requireSameRows checks that two databases hold the same customers.
func requireSameRows(t testing.TB, a, b *memdb.DB) {
	t.Helper()
	ra, rb := a.Rows(customers), b.Rows(customers)
	require.Equal(t, len(ra), len(rb), "row counts differ")
	for k, row := range ra {
		other, ok := rb[k]
		require.True(t, ok, "row %s missing on %s", k, b.Name())
		require.Equal(t, len(row), len(other), "row %s: %v vs %v", k, row, other)
		for f, v := range row {
			require.True(t, duplex.Equal(v, other[f]), "row %s field %s: %v vs %v", k, f, v, other[f])
		}
	}
}
