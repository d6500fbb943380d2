package resolve_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// T is what the harness needs from *testing.T and *rapid.T.
type T interface {
	require.TestingT
	Helper()
}

var items = duplex.Table{Schema: "public", Name: "items"}

// itemColumns: name, note are strings; n an int64 counter; f a float64
// counter; tags a []string; ts the updated_at timestamp.
var itemColumns = []string{"id", "name", "note", "n", "f", "tags", "ts"}

func id(i int64) duplex.Key { return duplex.Key{{Name: "id", Value: i}} }

// epoch is the start of the fake clock.
var epoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a clock that moves only when told; both databases share it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// dlqSink is a DeadLetterSink recording entries.
type dlqSink struct {
	mu      sync.Mutex
	entries []duplex.DeadLetter
}

func (d *dlqSink) Put(_ context.Context, l *duplex.DeadLetter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.entries {
		if d.entries[i].Change.ID == l.Change.ID && d.entries[i].Direction == l.Direction {
			d.entries[i] = *l
			return nil
		}
	}
	d.entries = append(d.entries, *l)
	return nil
}

func (d *dlqSink) all() []duplex.DeadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.entries)
}

// keys returns the keys (Key.String()) with a DLQ entry.
func (d *dlqSink) keys() map[string]bool {
	out := map[string]bool{}
	for _, e := range d.all() {
		out[e.Change.Key.String()] = true
	}
	return out
}

// seen is what a resolver was shown and what it decided, recorded during
// the Resolve call (a Conflict must not be kept after it).
type seen struct {
	Dir         string // "a->b"
	Kind        duplex.ConflictKind
	Op          duplex.Op
	Key         string
	Fields      []string
	Conflicting []string
	Picks       map[string]duplex.Pick
	Values      map[string]any
	Dead        string
	SourceTime  time.Time
	TargetTime  time.Time
}

func (s seen) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s fields=%v conflicting=%v", s.Dir, s.Kind, s.Op, s.Key, s.Fields, s.Conflicting)
	for _, f := range s.Fields {
		fmt.Fprintf(&b, " %s:%s", f, s.Picks[f])
	}
	if s.Dead != "" {
		fmt.Fprintf(&b, " dead=%q", s.Dead)
	}
	return b.String()
}

// recorder wraps a resolver and records every call.
type recorder struct {
	next duplex.Resolver
	mu   sync.Mutex
	log  []seen
}

func (r *recorder) Resolve(ctx context.Context, c *duplex.Conflict) error {
	var err error
	if r.next != nil {
		err = r.next.Resolve(ctx, c)
	}
	s := seen{
		Dir: c.Direction.From + "->" + c.Direction.To, Kind: c.Kind, Op: c.Change.Op, Key: c.Change.Key.String(),
		Fields: c.Fields(), Conflicting: c.Conflicting(), Picks: map[string]duplex.Pick{}, Values: map[string]any{},
		Dead: c.DeadLettered(), SourceTime: c.SourceTime, TargetTime: c.TargetTime,
	}
	for _, f := range s.Fields {
		p, v := c.Decision(f)
		s.Picks[f] = p
		if p == duplex.UseValue {
			s.Values[f] = v
		}
	}
	r.mu.Lock()
	r.log = append(r.log, s)
	r.mu.Unlock()
	return err
}

func (r *recorder) calls() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

// conflicts returns the recorded calls of a conflict kind other than NoConflict.
func (r *recorder) conflicts() []seen {
	var out []seen
	for _, s := range r.calls() {
		if s.Kind != duplex.NoConflict {
			out = append(out, s)
		}
	}
	return out
}

// twiceSource delivers every batch twice when twice is set, as a source may
// after a reconnect, and counts deliveries.
type twiceSource struct {
	next      duplex.ChangeSource
	twice     bool
	delivered int
}

func (s *twiceSource) Stream(ctx context.Context, from duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	return s.next.Stream(ctx, from, func(ctx context.Context, b []duplex.Change) error {
		s.delivered += len(b)
		if err := fn(ctx, slices.Clone(b)); err != nil {
			return err
		}
		if s.twice {
			return fn(ctx, slices.Clone(b))
		}
		return nil
	})
}

func (s *twiceSource) Ack(ctx context.Context, p duplex.Position) error { return s.next.Ack(ctx, p) }

// clockApplier is a memdb Applier that reports each row's commit time under
// duplex.CommitTimeField, as an Applier for commit-timestamp LWW must. The
// time is that of the newest change the row reflects: the latest user
// change to the key on this database, or the newest source change the sync
// applied to it (not the time of the sync's own write, which would make
// every synced row look newer than the change it carries).
type clockApplier struct {
	*memdb.Applier
	db *memdb.DB

	mu     sync.Mutex
	synced map[string]time.Time
}

func newClockApplier(db *memdb.DB) *clockApplier {
	return &clockApplier{Applier: db.Applier("duplex"), db: db, synced: map[string]time.Time{}}
}

func (c *clockApplier) Lookup(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	rows, err := c.Applier.Lookup(ctx, t, keys)
	if err != nil {
		return nil, err
	}
	user := map[string]time.Time{}
	for _, ch := range c.db.Changes() {
		if ch.Origin == "" && ch.Table == t {
			user[ch.Key.String()] = ch.CommitTime
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, row := range rows {
		if row == nil {
			continue
		}
		k := t.String() + " " + keys[i].String()
		at := user[keys[i].String()]
		if s := c.synced[k]; s.After(at) {
			at = s
		}
		row[duplex.CommitTimeField] = at
	}
	return rows, nil
}

func (c *clockApplier) Apply(ctx context.Context, b *duplex.Batch) error {
	if err := c.Applier.Apply(ctx, b); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range b.Writes {
		k := w.Table.String() + " " + w.Key.String()
		if w.Change.CommitTime.After(c.synced[k]) {
			c.synced[k] = w.Change.CommitTime
		}
	}
	return nil
}

// xminApplier is a memdb Applier that reports, like applypg with
// track_commit_timestamp (pg_xact_commit_timestamp(xmin)), the commit time
// of the row's last write, whoever made it: for a row the sync wrote, the
// time of the sync's apply.
type xminApplier struct {
	*memdb.Applier
	db *memdb.DB
}

func (x *xminApplier) Lookup(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	rows, err := x.Applier.Lookup(ctx, t, keys)
	if err != nil {
		return nil, err
	}
	last := map[string]time.Time{}
	for _, ch := range x.db.Changes() {
		if ch.Table == t {
			last[ch.Key.String()] = ch.CommitTime
		}
	}
	for i, row := range rows {
		if row != nil {
			row[duplex.CommitTimeField] = last[keys[i].String()]
		}
	}
	return rows, nil
}

// pair is two memdb replicas "a" and "b" of the items table, synced by
// Pipelines run to idle on demand, one direction at a time.
type pair struct {
	t           T
	a, b        *memdb.DB
	clock       *fakeClock
	dlq         *dlqSink
	rec         *recorder
	commitTimes bool // the appliers report commit times
	xminTimes   bool // the appliers report the last write's commit time (applypg)
	appliers    map[string]duplex.Applier
	agreements  *duplex.MemoryAgreements
	batch       int
}

type pairOption func(*pair)

// withCommitTimes makes the appliers report rows' commit times.
func withCommitTimes() pairOption { return func(p *pair) { p.commitTimes = true } }

// withXminTimes makes the appliers report the commit time of each row's
// last write, as applypg does.
func withXminTimes() pairOption { return func(p *pair) { p.xminTimes = true } }

// withBatch sets the source batch size.
func withBatch(n int) pairOption { return func(p *pair) { p.batch = n } }

func newPair(t T, r duplex.Resolver, opts ...pairOption) *pair {
	t.Helper()
	p := &pair{
		t: t, a: memdb.New("a"), b: memdb.New("b"), clock: &fakeClock{t: epoch},
		dlq: &dlqSink{}, rec: &recorder{next: r}, appliers: map[string]duplex.Applier{}, batch: 64,
		agreements: duplex.NewMemoryAgreements(1 << 10),
	}
	for _, o := range opts {
		o(p)
	}
	for _, db := range []*memdb.DB{p.a, p.b} {
		db.SetClock(p.clock.Now)
		require.NoError(t, db.CreateTable(items, memdb.TableOptions{Key: []string{"id"}, Columns: itemColumns}))
		switch {
		case p.commitTimes:
			p.appliers[db.Name()] = newClockApplier(db)
		case p.xminTimes:
			p.appliers[db.Name()] = &xminApplier{Applier: db.Applier("duplex"), db: db}
		default:
			p.appliers[db.Name()] = db.Applier("duplex")
		}
	}
	return p
}

func (p *pair) db(name string) *memdb.DB {
	switch name {
	case "a":
		return p.a
	case "b":
		return p.b
	}
	panic("no database " + name)
}

// seed inserts rows on both sides as users, then moves both sync slots past
// them: the replicas start in agreement.
func (p *pair) seed(rows ...duplex.Values) {
	p.t.Helper()
	for _, db := range []*memdb.DB{p.a, p.b} {
		for _, r := range rows {
			require.NoError(p.t, db.Insert(items, r.Clone()))
		}
		if log := db.Changes(); len(log) > 0 {
			require.NoError(p.t, db.Source(memdb.SourceConfig{Slot: "sync"}).Ack(context.Background(), log[len(log)-1].Position))
		}
		require.NoError(p.t, db.AgreeRows(items))
	}
	p.clock.Advance(time.Second)
}

// step advances the clock by one second: every user edit gets its own time.
func (p *pair) step() time.Time { return p.clock.Advance(time.Second) }

func (p *pair) update(side string, key int64, set duplex.Values) {
	p.t.Helper()
	p.step()
	require.NoError(p.t, p.db(side).Update(items, id(key), set))
}

func (p *pair) insert(side string, row duplex.Values) {
	p.t.Helper()
	p.step()
	require.NoError(p.t, p.db(side).Insert(items, row))
}

func (p *pair) del(side string, key int64) {
	p.t.Helper()
	p.step()
	require.NoError(p.t, p.db(side).Delete(items, id(key)))
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// deliver runs the from->to Pipeline until its source is idle and returns
// how many changes the source delivered.
func (p *pair) deliver(from, to string, twice bool) int {
	p.t.Helper()
	src := &twiceSource{
		next: p.db(from).Source(memdb.SourceConfig{
			Slot: "sync", SkipOrigins: []string{"duplex"}, StopWhenIdle: true, BatchSize: p.batch,
		}),
		twice: twice,
	}
	pl, err := duplex.NewPipeline(&duplex.Config{
		Name:        "test",
		Direction:   duplex.Direction{From: from, To: to},
		Source:      src,
		Target:      p.appliers[to],
		Peer:        p.appliers[from],
		Agreements:  p.agreements,
		Resolver:    p.rec,
		DeadLetters: p.dlq,
		Logger:      discard,
		Options: duplex.Options{
			BatchSize: p.batch, MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
			ShutdownTimeout: 5 * time.Second,
		},
	})
	require.NoError(p.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(p.t, pl.Run(ctx))
	require.NoError(p.t, ctx.Err(), "pipeline %s->%s did not finish in time", from, to)
	return src.delivered
}

// quiesce runs both directions, a->b first when abFirst, until neither
// delivers anything.
func (p *pair) quiesce(abFirst bool) {
	p.t.Helper()
	order := [][2]string{{"a", "b"}, {"b", "a"}}
	if !abFirst {
		order[0], order[1] = order[1], order[0]
	}
	for range 10 {
		n := 0
		for _, d := range order {
			n += p.deliver(d[0], d[1], false)
		}
		if n == 0 {
			return
		}
	}
	require.Fail(p.t, "the replicas did not quiesce in 10 rounds")
}

// diff lists the keys where a and b differ.
func (p *pair) diff() []string {
	ra, rb := p.a.Rows(items), p.b.Rows(items)
	var out []string
	for k, row := range ra {
		if !sameRow(row, rb[k]) {
			out = append(out, fmt.Sprintf("%s: a=%v b=%v", k, row, rb[k]))
		}
	}
	for k, row := range rb {
		if ra[k] == nil {
			out = append(out, fmt.Sprintf("%s: a=<none> b=%v", k, row))
		}
	}
	sort.Strings(out)
	return out
}

// undeadDiff lists the keys where a and b differ and no DLQ entry names the key.
func (p *pair) undeadDiff() []string {
	dead := p.dlq.keys()
	var out []string
	for _, d := range p.diff() {
		k, _, _ := strings.Cut(d, ": ")
		if !dead[k] {
			out = append(out, d)
		}
	}
	return out
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

// requireConverged checks that both replicas hold the same rows and nothing
// was dead-lettered.
func (p *pair) requireConverged() {
	p.t.Helper()
	require.Empty(p.t, p.diff(), "replicas differ; resolver calls:\n%s", p.trace())
	require.Empty(p.t, p.dlq.all(), "unexpected dead letters; resolver calls:\n%s", p.trace())
}

func (p *pair) trace() string {
	var b strings.Builder
	for _, s := range p.rec.calls() {
		b.WriteString("  " + s.String() + "\n")
	}
	return b.String()
}

func (p *pair) get(side string, key int64) duplex.Values { return p.db(side).Get(items, id(key)) }

// scenario is a sequence of user edits made while the sync is down.
type scenario func(p *pair)

// outcome is the end state of a scenario after quiescing.
type outcome struct {
	a, b map[string]duplex.Values
	dead []duplex.DeadLetter // in the a->b-first run
	// deadBA are the dead letters of the b->a-first run. They can differ
	// from dead: a direction that meets a conflict before the change that
	// settles it (a delete whose time an LWW needs) dead-letters it, and
	// the later change then settles the row.
	deadBA []duplex.DeadLetter
	calls  []seen
}

// bothWays plays sc twice on fresh replicas, delivering a->b first once and
// b->a first once, and checks that each run ends with equal replicas (or a
// dead letter for every key where they differ) and that both runs end in
// the same rows: the resolver decided the same conflict the same way from
// either direction, whatever the arrival order.
// It returns the outcome of the a->b-first run.
func bothWays(t *testing.T, r func() duplex.Resolver, sc scenario, opts ...pairOption) (outcome, *pair) {
	t.Helper()
	var outs [2]outcome
	var first *pair
	for i, abFirst := range []bool{true, false} {
		p := newPair(t, r(), opts...)
		sc(p)
		p.quiesce(abFirst)
		require.Empty(t, p.undeadDiff(), "abFirst=%v: replicas differ without a dead letter; resolver calls:\n%s", abFirst, p.trace())
		outs[i] = outcome{a: p.a.Rows(items), b: p.b.Rows(items), dead: p.dlq.all(), calls: p.rec.conflicts()}
		if i == 0 {
			first = p
		}
	}
	for side, rows := range map[string][2]map[string]duplex.Values{"a": {outs[0].a, outs[1].a}, "b": {outs[0].b, outs[1].b}} {
		require.Equal(t, len(rows[0]), len(rows[1]), "the delivery order changed the rows of %s", side)
		for k, row := range rows[0] {
			require.True(t, sameRow(row, rows[1][k]), "the delivery order changed key %s on %s: %v vs %v", k, side, row, rows[1][k])
		}
	}
	// A two-way merge asks the resolvers once per conflict, in the direction
	// that meets it first: a->b in the first run, b->a in the second. The
	// calls of both runs are returned, so a test sees the conflict decided
	// from each direction.
	out := outs[0]
	out.calls = append(slices.Clone(outs[0].calls), outs[1].calls...)
	out.deadBA = outs[1].dead
	return out, first
}

// row builds an items row with the given fields; the rest are NULL.
func row(key int64, kv ...any) duplex.Values {
	v := duplex.Values{"id": key}
	for _, c := range itemColumns[1:] {
		v[c] = nil
	}
	for i := 0; i+1 < len(kv); i += 2 {
		v[kv[i].(string)] = kv[i+1]
	}
	return v
}

// decisions returns the picks of the recorded conflicts seen in direction dir.
func decisions(calls []seen, dir string) []map[string]duplex.Pick {
	var out []map[string]duplex.Pick
	for _, s := range calls {
		if s.Dir == dir {
			out = append(out, s.Picks)
		}
	}
	return out
}
