package resolvetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// T is what a Pair needs from *testing.T, *rapid.T or any testing.TB.
type T interface {
	require.TestingT
	Helper()
}

// Pair is two in-memory replicas of one table, synced on demand by two-way
// Pipelines run to idle, one direction at a time, with a shared fake clock
// that moves only when told (every user edit advances it by a second). The
// resolver under test is wrapped: every call is recorded (Calls), and a
// call that modifies its input, decides a field outside Config.Decides or
// panics is recorded as a violation (Violations) and dead-letters the
// change.
type Pair struct {
	t          T
	table      Table
	sides      [2]string
	dbs        map[string]*memdb.DB
	clock      *clock
	dlq        *deadLetters
	watch      *watch
	appliers   map[string]duplex.Applier
	agreements *duplex.MemoryAgreements
	batch      int
	log        []string
}

// NewPair returns two empty replicas named cfg.Sides holding cfg.Table, whose
// sync decides with r (nil: no resolver, the Pipeline's defaults).
func NewPair(t T, cfg Config, r duplex.Resolver) *Pair {
	t.Helper()
	cfg = cfg.withDefaults()
	p := &Pair{
		t: t, table: cfg.Table, sides: cfg.Sides, dbs: map[string]*memdb.DB{}, clock: &clock{t: Epoch},
		dlq: &deadLetters{}, watch: newWatch(r, cfg.Decides), appliers: map[string]duplex.Applier{},
		agreements: duplex.NewMemoryAgreements(1 << 10), batch: cfg.Batch,
	}
	for _, side := range cfg.Sides {
		db := memdb.New(side)
		db.SetClock(p.clock.Now)
		require.NoError(t, db.CreateTable(cfg.Table.Table, memdb.TableOptions{Key: []string{cfg.Table.Key}, Columns: cfg.Table.columnNames()}))
		p.dbs[side] = db
		p.appliers[side] = cfg.Times.applier(db)
	}
	return p
}

// DB returns the replica of side.
func (p *Pair) DB(side string) *memdb.DB {
	db, ok := p.dbs[side]
	if !ok {
		p.t.Errorf("resolvetest: no side %q (the sides are %q and %q)", side, p.sides[0], p.sides[1])
		p.t.FailNow()
	}
	return db
}

// Other returns the side that is not side.
func (p *Pair) Other(side string) string {
	if side == p.sides[0] {
		return p.sides[1]
	}
	return p.sides[0]
}

// Now returns the time of the Pair's clock.
func (p *Pair) Now() time.Time { return p.clock.Now() }

// Advance moves the Pair's clock by d and returns the new time.
func (p *Pair) Advance(d time.Duration) time.Time { return p.clock.Advance(d) }

// Seed inserts rows on both sides as users, then moves both sync slots past
// them and records them as agreed: the replicas start in agreement.
func (p *Pair) Seed(rows ...duplex.Values) {
	p.t.Helper()
	for _, side := range p.sides {
		db := p.dbs[side]
		for _, r := range rows {
			require.NoError(p.t, db.Insert(p.table.Table, r.Clone()))
		}
		if log := db.Changes(); len(log) > 0 {
			require.NoError(p.t, db.Source(memdb.SourceConfig{Slot: "sync"}).Ack(context.Background(), log[len(log)-1].Position))
		}
		require.NoError(p.t, db.AgreeRows(p.table.Table))
	}
	p.clock.Advance(time.Second)
}

// Insert inserts row on side as a user, a second after the last edit.
func (p *Pair) Insert(side string, row duplex.Values) {
	p.t.Helper()
	require.NoError(p.t, p.insert(side, row))
}

// Update sets columns of row key on side as a user, a second after the last edit.
func (p *Pair) Update(side string, key int64, set duplex.Values) {
	p.t.Helper()
	require.NoError(p.t, p.update(side, key, set))
}

// Delete deletes row key on side as a user, a second after the last edit.
func (p *Pair) Delete(side string, key int64) {
	p.t.Helper()
	require.NoError(p.t, p.delete(side, key))
}

func (p *Pair) insert(side string, row duplex.Values) error {
	p.clock.Advance(time.Second)
	return p.DB(side).Insert(p.table.Table, row)
}

func (p *Pair) update(side string, key int64, set duplex.Values) error {
	p.clock.Advance(time.Second)
	return p.DB(side).Update(p.table.Table, p.table.KeyOf(key), set)
}

func (p *Pair) delete(side string, key int64) error {
	p.clock.Advance(time.Second)
	return p.DB(side).Delete(p.table.Table, p.table.KeyOf(key))
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// Deliver runs the from->to Pipeline until its source is idle, delivering
// every batch twice when twice is set (as a source may after a reconnect),
// and returns how many changes the source delivered.
func (p *Pair) Deliver(from, to string, twice bool) int {
	p.t.Helper()
	n, err := p.deliver(from, to, twice)
	require.NoError(p.t, err)
	return n
}

func (p *Pair) deliver(from, to string, twice bool) (int, error) {
	src := &twiceSource{
		next: p.DB(from).Source(memdb.SourceConfig{
			Slot: "sync", SkipOrigins: []string{"duplex"}, StopWhenIdle: true, BatchSize: p.batch,
		}),
		twice: twice,
	}
	pl, err := duplex.NewPipeline(&duplex.Config{
		Name:        "resolvetest",
		Direction:   duplex.Direction{From: from, To: to},
		Source:      src,
		Target:      p.appliers[to],
		Peer:        p.appliers[from],
		Agreements:  p.agreements,
		Resolver:    p.watch,
		DeadLetters: p.dlq,
		Logger:      discard,
		Options: duplex.Options{
			BatchSize: p.batch, MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
			ShutdownTimeout: 5 * time.Second,
		},
	})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pl.Run(ctx); err != nil {
		return 0, fmt.Errorf("resolvetest: pipeline %s->%s: %w", from, to, err)
	}
	if ctx.Err() != nil {
		return 0, fmt.Errorf("resolvetest: pipeline %s->%s did not finish in time", from, to)
	}
	return src.delivered, nil
}

// Quiesce runs both directions, first's changes first, until neither
// delivers anything.
func (p *Pair) Quiesce(first string) {
	p.t.Helper()
	require.NoError(p.t, p.quiesce(first))
}

func (p *Pair) quiesce(first string) error {
	for range 10 {
		n := 0
		for _, from := range []string{first, p.Other(first)} {
			d, err := p.deliver(from, p.Other(from), false)
			if err != nil {
				return err
			}
			n += d
		}
		if n == 0 {
			return nil
		}
	}
	return fmt.Errorf("resolvetest: the replicas did not quiesce in 10 rounds")
}

// Get returns row key on side (nil when side has none).
func (p *Pair) Get(side string, key int64) duplex.Values {
	return p.DB(side).Get(p.table.Table, p.table.KeyOf(key))
}

// Rows returns side's rows by key (Key.String()).
func (p *Pair) Rows(side string) map[string]duplex.Values { return p.DB(side).Rows(p.table.Table) }

// Diff lists the keys where the two replicas differ, with both rows.
func (p *Pair) Diff() []string {
	ra, rb := p.Rows(p.sides[0]), p.Rows(p.sides[1])
	var out []string
	for k, row := range ra {
		if !sameRow(row, rb[k]) {
			out = append(out, fmt.Sprintf("%s: %s=%v %s=%v", k, p.sides[0], row, p.sides[1], rb[k]))
		}
	}
	for k, row := range rb {
		if ra[k] == nil {
			out = append(out, fmt.Sprintf("%s: %s=<none> %s=%v", k, p.sides[0], p.sides[1], row))
		}
	}
	sort.Strings(out)
	return out
}

// UndeadDiff is Diff without the keys a dead letter names.
func (p *Pair) UndeadDiff() []string {
	dead := p.DeadKeys()
	var out []string
	for _, d := range p.Diff() {
		k, _, _ := strings.Cut(d, ": ")
		if !dead[k] {
			out = append(out, d)
		}
	}
	return out
}

// RequireConverged checks that both replicas hold the same rows and that
// nothing was dead-lettered.
func (p *Pair) RequireConverged() {
	p.t.Helper()
	require.Empty(p.t, p.Diff(), "replicas differ; resolver calls:\n%s", p.Trace())
	require.Empty(p.t, p.DeadLetters(), "unexpected dead letters; resolver calls:\n%s", p.Trace())
}

// DeadLetters returns the dead letters of both directions, in arrival order
// (a redelivered entry replaces the earlier one).
func (p *Pair) DeadLetters() []duplex.DeadLetter { return p.dlq.all() }

// DeadKeys returns the keys (Key.String()) a dead letter names.
func (p *Pair) DeadKeys() map[string]bool {
	out := map[string]bool{}
	for _, e := range p.dlq.all() {
		out[e.Change.Key.String()] = true
	}
	return out
}

// Calls returns every resolver call so far.
func (p *Pair) Calls() []Call { return p.watch.calls() }

// Conflicts returns the resolver calls of a conflict kind other than
// NoConflict.
func (p *Pair) Conflicts() []Call {
	var out []Call
	for _, c := range p.watch.calls() {
		if c.Kind != duplex.NoConflict {
			out = append(out, c)
		}
	}
	return out
}

// Violations returns what the resolver did that a resolver must not: modify
// its input, decide a field outside Config.Decides, panic.
func (p *Pair) Violations() []string { return p.watch.violations() }

// Trace lists the resolver calls, one a line.
func (p *Pair) Trace() string {
	var b strings.Builder
	for _, c := range p.watch.calls() {
		b.WriteString("  " + c.String() + "\n")
	}
	return b.String()
}

// Report describes the run for a failure message: the edits and deliveries
// of a random run, the resolver calls, the dead letters and both replicas'
// rows.
func (p *Pair) Report() string {
	var b strings.Builder
	if len(p.log) > 0 {
		b.WriteString("edits and deliveries:\n")
		for _, l := range p.log {
			b.WriteString("  " + l + "\n")
		}
	}
	b.WriteString("resolver calls:\n" + p.Trace())
	b.WriteString("dead letters:\n")
	for _, d := range p.dlq.all() {
		fmt.Fprintf(&b, "  %s %s %s: %s\n", d.Direction, d.Change.Op, d.Change.Key, d.Error)
	}
	b.WriteString("rows:\n")
	for _, side := range p.sides {
		rows := p.Rows(side)
		for _, k := range slices.Sorted(maps.Keys(rows)) {
			fmt.Fprintf(&b, "  %s %s %v\n", side, k, rows[k])
		}
	}
	return b.String()
}

func (p *Pair) logf(format string, args ...any) {
	p.log = append(p.log, fmt.Sprintf("%-4s ", p.clock.Now().Sub(Epoch))+fmt.Sprintf(format, args...))
}

func sameRow(x, y duplex.Values) bool {
	if x == nil || y == nil {
		return x == nil && y == nil
	}
	if len(x) != len(y) {
		return false
	}
	for f, v := range x {
		w, ok := y[f]
		if !ok || !duplex.Equal(v, w) {
			return false
		}
	}
	return true
}
