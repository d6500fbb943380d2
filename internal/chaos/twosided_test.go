package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/testenv"
)

// The two-sided workload and its oracle (TestChaosKillAndRestart).
//
// Keys of customers are partitioned by who writes them:
//
//   - single-sided keys: only a (seeded ids with id%3 == 1, and every id a
//     inserts) or only b (id%3 == 2, and b's inserts) ever writes them:
//     updates of every field that side may write (a: name, email, note,
//     last_activity, counter + 1; b: payment_status, note, last_activity,
//     counter + 1), deletes and inserts;
//   - both-sided keys (id%3 == 0): both sides write them. pgbisync has no
//     counter resolver, so the fields both sides write are owned ones,
//     decided by -authority: a writes name, email (its own) and now and then
//     payment_status (b's: the merge writes b's value back over it); b
//     writes payment_status and now and then name (a's). The counter of a
//     both-sided key is incremented by a only.
//
// pgbisync runs with -conflict dlq: every conflict the authority map does
// not decide is dead-lettered, so a false conflict on a single-sided key
// shows in the DLQ rather than being decided quietly.
//
// Each side has several writers; each key has at most one writer per side,
// so the order of a key's commits on a side is the order its writer made
// them. The oracle applies a write to the expected row only when its
// statement returned (autocommit: the COMMIT returned). A statement that
// failed with a server error rolled back; one whose outcome is unknown (a
// connection error) makes its key uncertain: its sides are still compared
// with each other, not with the expected row.

// chaosSeed returns DUPLEX_CHAOS_SEED, or a fresh seed, and logs it.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("DUPLEX_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "DUPLEX_CHAOS_SEED")
		t.Logf("seed %d (DUPLEX_CHAOS_SEED)", n)
		return n
	}
	n := rand.Uint64N(1_000_000)
	t.Logf("seed %d (DUPLEX_CHAOS_SEED=%d repeats its schedule)", n, n)
	return n
}

// Who writes a key.
const (
	onlyA = iota
	onlyB
	bothSides
)

var classNames = [3]string{"a-only", "b-only", "both-sided"}

// row is a customers row as the oracle and the comparison see it.
type row struct {
	name, email, status string
	note, activity      *string
	counter             int64
	updatedAt           time.Time
}

func (r *row) String() string {
	if r == nil {
		return "(absent)"
	}
	s := func(p *string) string {
		if p == nil {
			return "NULL"
		}
		return strconv.Quote(*p)
	}
	return fmt.Sprintf("(name=%q email=%q status=%q note=%s activity=%s counter=%d updated_at=%s)",
		r.name, r.email, r.status, s(r.note), s(r.activity), r.counter, r.updatedAt.UTC().Format(time.RFC3339Nano))
}

func (r *row) equal(o *row) bool {
	if r == nil || o == nil {
		return r == nil && o == nil
	}
	eq := func(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	return r.name == o.name && r.email == o.email && r.status == o.status && eq(r.note, o.note) &&
		eq(r.activity, o.activity) && r.counter == o.counter && r.updatedAt.Equal(o.updatedAt)
}

// oracle knows every committed write and the expected row of every key.
type oracle struct {
	mu        sync.Mutex
	want      map[int64]*row // nil: deleted
	class     map[int64]int
	uncertain map[int64]string
	history   map[int64][]string // each key's writes, in order per side
	anomalies []string           // a write that found no row it should have found

	commits, failed [2]atomic.Int64
	start           time.Time
}

func newOracle(rows int) *oracle {
	o := &oracle{want: map[int64]*row{}, class: map[int64]int{}, uncertain: map[int64]string{},
		history: map[int64][]string{}, start: time.Now()}
	seeded, _ := time.Parse(time.DateOnly, "2026-01-01")
	for id := int64(1); id <= int64(rows); id++ {
		o.want[id] = &row{name: fmt.Sprintf("customer %d", id), email: fmt.Sprintf("c%d@example.com", id),
			status: "trial", updatedAt: seeded}
		o.class[id] = []int{bothSides, onlyA, onlyB}[id%3]
	}
	return o
}

// seededUTC fixes the seeded rows' updated_at once the session time zone
// is known: '2026-01-01' is read in it.
func (o *oracle) seededTime(t *testing.T, db *testenv.DB) {
	var ts time.Time
	require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT updated_at FROM customers WHERE id = 1`).Scan(&ts))
	for _, r := range o.want {
		r.updatedAt = ts
	}
}

// writeOp is one write: its SQL, its arguments, and what it does to the
// expected row when it commits (nil for an insert's result: set by
// RETURNING).
type writeOp struct {
	id     int64
	desc   string
	sql    string
	args   []any
	insert bool
	delete bool
	apply  func(r *row)
}

// twoSided runs the writers of both sides.
type twoSided struct {
	o    *oracle
	stop chan struct{}
	wg   sync.WaitGroup
	gate sync.RWMutex // held by each write; pause takes it whole
}

// writeTwoSided starts n writers per side, each at rate statements/s.
func (e *env) writeTwoSided(seed uint64, o *oracle, n, rate int) *twoSided {
	w := &twoSided{o: o, stop: make(chan struct{})}
	pools := [2]*pgxpool.Pool{e.a.Pool, e.b.Pool}
	// Every writer is built before any starts: a running writer's insert
	// changes o.class, which building the next one reads.
	var writers []*writer
	for side := range 2 {
		for j := range n {
			wr := &writer{o: o, side: side, index: j, rnd: rand.New(rand.NewPCG(seed, uint64(side*64+j)))}
			for id := int64(1); id <= int64(e.rows); id++ {
				if int((id/3)%int64(n)) != j {
					continue
				}
				switch o.class[id] {
				case bothSides:
					wr.shared = append(wr.shared, id)
				case side:
					wr.own = append(wr.own, id)
				}
			}
			wr.next = int64(1_000_000*(side+1) + 100_000*j)
			writers = append(writers, wr)
		}
	}
	for _, wr := range writers {
		w.wg.Go(func() { wr.loop(pools[wr.side], rate, w) })
	}
	return w
}

// pause waits for the writes under way and holds the writers until resume.
func (w *twoSided) pause() { w.gate.Lock() }

func (w *twoSided) resume() { w.gate.Unlock() }

// halt stops the writers (not paused) and returns what they committed.
func (w *twoSided) halt() string {
	close(w.stop)
	w.wg.Wait()
	o := w.o
	return fmt.Sprintf("writes committed a: %d, b: %d (failed: %d, %d; uncertain keys: %d)",
		o.commits[0].Load(), o.commits[1].Load(), o.failed[0].Load(), o.failed[1].Load(), len(o.uncertain))
}

// writer is one connection's worth of writes on one side.
type writer struct {
	o      *oracle
	side   int
	index  int
	rnd    *rand.Rand
	own    []int64 // live single-sided keys this writer owns
	shared []int64 // both-sided keys this writer writes on its side
	next   int64   // next id to insert
	seq    int
}

func (wr *writer) loop(pool *pgxpool.Pool, rate int, w *twoSided) {
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		w.gate.RLock()
		wr.exec(pool, wr.pick())
		w.gate.RUnlock()
	}
}

// pick draws the next write: 12% deletes of the writer's single-sided
// keys (while it has more than 20), 13% inserts (single-sided keys of this
// side), 35% updates of its both-sided keys, 40% updates of its
// single-sided keys.
func (wr *writer) pick() writeOp {
	wr.seq++
	rnd := wr.rnd
	tag := fmt.Sprintf("%s%d.%d", "ab"[wr.side:wr.side+1], wr.index, wr.seq)
	switch r := rnd.IntN(100); {
	case r < 12 && len(wr.own) > 20:
		i := rnd.IntN(len(wr.own))
		id := wr.own[i]
		wr.own = slices.Delete(wr.own, i, i+1)
		return writeOp{id: id, desc: "delete", sql: `DELETE FROM customers WHERE id = $1`, args: []any{id}, delete: true}
	case r < 25 || len(wr.own) == 0:
		return wr.insert(tag)
	case r < 60:
		return wr.sharedUpdate(wr.key(wr.shared), tag)
	default:
		return wr.ownUpdate(wr.key(wr.own), tag)
	}
}

// key draws a key of ids: a quarter of the time one of the first two
// (very hot: both sides edit them several times a second, so merges find
// both sides changed and write back), a quarter one of the first tenth,
// else any (most keys get a few edits, so that a wrong value a kill leaves
// behind is seldom overwritten by a later edit before the next check).
func (wr *writer) key(ids []int64) int64 {
	switch r := wr.rnd.IntN(4); {
	case len(ids) < 10 || r >= 2:
		return ids[wr.rnd.IntN(len(ids))]
	case r == 0:
		return ids[wr.rnd.IntN(2)]
	default:
		return ids[wr.rnd.IntN(len(ids)/10)]
	}
}

// insert inserts a new key, single-sided for this writer's side.
func (wr *writer) insert(tag string) writeOp {
	id := wr.next
	wr.next++
	wr.own = append(wr.own, id)
	note := "inserted " + tag
	want := row{name: "new " + tag, email: tag + "@example.com", status: "trial", note: &note, counter: int64(wr.rnd.IntN(5))}
	if wr.side == 1 {
		want.status = []string{"trial", "active"}[wr.rnd.IntN(2)]
	}
	return writeOp{id: id, desc: "insert " + want.String(), insert: true,
		sql:   `INSERT INTO customers (id, name, email, payment_status, note, counter) VALUES ($1, $2, $3, $4, $5, $6) RETURNING updated_at`,
		args:  []any{id, want.name, want.email, want.status, note, want.counter},
		apply: func(r *row) { *r = want }}
}

// ownUpdate updates a single-sided key with what its side may write.
func (wr *writer) ownUpdate(id int64, tag string) writeOp {
	switch k := wr.rnd.IntN(4); {
	case k == 0 && wr.side == 0:
		name, email := "name "+tag, tag+"@example.com"
		return writeOp{id: id, desc: "name, email = " + tag, sql: `UPDATE customers SET name = $2, email = $3 WHERE id = $1`,
			args: []any{id, name, email}, apply: func(r *row) { r.name, r.email = name, email }}
	case k == 0:
		status := []string{"trial", "active", "past_due", "cancelled"}[wr.rnd.IntN(4)]
		return writeOp{id: id, desc: "payment_status = " + status, sql: `UPDATE customers SET payment_status = $2 WHERE id = $1`,
			args: []any{id, status}, apply: func(r *row) { r.status = status }}
	case k == 1:
		note := "note " + tag
		return writeOp{id: id, desc: "note = " + tag, sql: `UPDATE customers SET note = $2 WHERE id = $1`,
			args: []any{id, note}, apply: func(r *row) { r.note = &note }}
	case k == 2:
		act := "visit " + tag
		return writeOp{id: id, desc: "last_activity = " + tag, sql: `UPDATE customers SET last_activity = $2 WHERE id = $1`,
			args: []any{id, act}, apply: func(r *row) { r.activity = &act }}
	default:
		return writeOp{id: id, desc: "counter + 1", sql: `UPDATE customers SET counter = counter + 1 WHERE id = $1`,
			args: []any{id}, apply: func(r *row) { r.counter++ }}
	}
}

// sharedUpdate updates a both-sided key: a writes name and email (its own
// fields), the counter (only a increments it) and, one time in ten,
// payment_status (b's: authority writes b's value back over it); b writes
// payment_status and, one time in five, name (a's). This workload found
// that a non-owner's edit reaching a merge only as the target's row (the
// merge made for a change of the owner's side) used to win
// (resolve/nonowner_test.go).
func (wr *writer) sharedUpdate(id int64, tag string) writeOp {
	k := wr.rnd.IntN(10)
	if wr.side == 0 {
		switch {
		case k < 5:
			name, email := "name "+tag, tag+"@example.com"
			return writeOp{id: id, desc: "name, email = " + tag, sql: `UPDATE customers SET name = $2, email = $3 WHERE id = $1`,
				args: []any{id, name, email}, apply: func(r *row) { r.name, r.email = name, email }}
		case k < 9:
			return writeOp{id: id, desc: "counter + 1", sql: `UPDATE customers SET counter = counter + 1 WHERE id = $1`,
				args: []any{id}, apply: func(r *row) { r.counter++ }}
		default:
			status := "set by a " + tag
			return writeOp{id: id, desc: "payment_status = " + status + " (not a's field)", sql: `UPDATE customers SET payment_status = $2 WHERE id = $1`,
				args: []any{id, status}, apply: func(*row) {}}
		}
	}
	if k < 8 {
		status := []string{"trial", "active", "past_due", "cancelled"}[wr.rnd.IntN(4)] + " " + tag
		return writeOp{id: id, desc: "payment_status = " + status, sql: `UPDATE customers SET payment_status = $2 WHERE id = $1`,
			args: []any{id, status}, apply: func(r *row) { r.status = status }}
	}
	name := "set by b " + tag
	return writeOp{id: id, desc: "name = " + name + " (not b's field)", sql: `UPDATE customers SET name = $2 WHERE id = $1`,
		args: []any{id, name}, apply: func(*row) {}}
}

// exec runs op and tells the oracle what committed.
func (wr *writer) exec(pool *pgxpool.Pool, op writeOp) {
	o := wr.o
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	var affected int64
	var ts time.Time
	if op.insert {
		err = pool.QueryRow(ctx, op.sql, op.args...).Scan(&ts)
		affected = 1
	} else {
		var tag pgconn.CommandTag
		tag, err = pool.Exec(ctx, op.sql, op.args...)
		affected = tag.RowsAffected()
	}
	side := "ab"[wr.side : wr.side+1]
	at := time.Since(o.start).Seconds()
	o.mu.Lock()
	defer o.mu.Unlock()
	if op.insert {
		o.class[op.id] = wr.side
	}
	if err != nil {
		o.failed[wr.side].Add(1)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			o.history[op.id] = append(o.history[op.id], fmt.Sprintf("%.3fs %s: %s: rolled back: %v", at, side, op.desc, err))
			if op.insert {
				wr.own = slices.DeleteFunc(wr.own, func(id int64) bool { return id == op.id })
			}
			if op.delete {
				wr.own = append(wr.own, op.id)
			}
			return
		}
		o.uncertain[op.id] = fmt.Sprintf("%s: %s: %v", side, op.desc, err)
		o.history[op.id] = append(o.history[op.id], fmt.Sprintf("%.3fs %s: %s: outcome unknown: %v", at, side, op.desc, err))
		return
	}
	o.commits[wr.side].Add(1)
	o.history[op.id] = append(o.history[op.id], fmt.Sprintf("%.3fs %s: %s", at, side, op.desc))
	if affected != 1 {
		o.anomalies = append(o.anomalies, fmt.Sprintf("id=%d: %s on %s changed %d rows (the key is %s; the row should be there)",
			op.id, op.desc, side, affected, o.className(op.id)))
		return
	}
	switch {
	case op.insert:
		r := &row{}
		op.apply(r)
		r.updatedAt = ts
		o.want[op.id] = r
	case op.delete:
		o.want[op.id] = nil
	default:
		op.apply(o.want[op.id])
	}
}

// className names the class of id ("unknown" for an id nobody wrote).
func (o *oracle) className(id int64) string {
	if c, ok := o.class[id]; ok {
		return classNames[c]
	}
	return "unknown"
}

// figures is what the two-sided oracle found.
type figures struct {
	compared       int   // keys compared (present on a side or expected)
	diverged       int   // keys whose rows differ between a and b
	wrong          int   // keys where a side differs from the expected row
	deletedPresent int   // keys deleted by their writer, still present on a side
	missing        int   // keys expected present, absent on a side
	dlqEntries     int   // pending DLQ entries of customers
	dlqSingle      int   // single-sided keys with a pending DLQ entry
	dlqShared      int   // both-sided keys with a pending DLQ entry
	drift          int64 // sum over keys and sides of |counter - expected|
	uncertain      int
	anomalies      int
	bad            []int64 // keys at fault
	dlqKeys        map[int64][]dlq.Entry
}

// worst returns, field by field, the larger fault figures of f and g, and
// g's rows compared.
func (f figures) worst(g figures) figures {
	return figures{compared: g.compared, diverged: max(f.diverged, g.diverged), wrong: max(f.wrong, g.wrong),
		deletedPresent: max(f.deletedPresent, g.deletedPresent), missing: max(f.missing, g.missing),
		dlqEntries: max(f.dlqEntries, g.dlqEntries), dlqSingle: max(f.dlqSingle, g.dlqSingle),
		dlqShared: max(f.dlqShared, g.dlqShared), drift: max(f.drift, g.drift),
		uncertain: max(f.uncertain, g.uncertain), anomalies: max(f.anomalies, g.anomalies)}
}

func (f figures) ok() bool {
	return f.diverged == 0 && f.wrong == 0 && f.dlqEntries == 0 && f.drift == 0 && f.anomalies == 0
}

func (f figures) String() string {
	return fmt.Sprintf("rows_compared=%d rows_diverged=%d single_sided_in_dlq=%d counter_drift=%d deleted_still_present=%d missing=%d wrong=%d dlq_entries=%d both_sided_in_dlq=%d uncertain=%d anomalies=%d",
		f.compared, f.diverged, f.dlqSingle, f.drift, f.deletedPresent, f.missing, f.wrong, f.dlqEntries, f.dlqShared, f.uncertain, f.anomalies)
}

// customers reads every row of customers.
func customers(ctx context.Context, db *testenv.DB) (map[int64]*row, error) {
	rs, err := db.Pool.Query(ctx, `SELECT id, name, email, payment_status, note, last_activity, counter, updated_at FROM customers`)
	if err != nil {
		return nil, err
	}
	out := map[int64]*row{}
	for rs.Next() {
		var id int64
		r := &row{}
		if err := rs.Scan(&id, &r.name, &r.email, &r.status, &r.note, &r.activity, &r.counter, &r.updatedAt); err != nil {
			return nil, err
		}
		out[id] = r
	}
	return out, rs.Err()
}

// measure compares both databases with the oracle once. The writers must
// have stopped.
func (e *env) measure(ctx context.Context, o *oracle) (figures, map[int64]*row, map[int64]*row, error) {
	var f figures
	ra, err := customers(ctx, e.a)
	if err != nil {
		return f, nil, nil, err
	}
	rb, err := customers(ctx, e.b)
	if err != nil {
		return f, nil, nil, err
	}
	entries, err := e.deadLetters(ctx)
	if err != nil {
		return f, nil, nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	f.uncertain, f.anomalies = len(o.uncertain), len(o.anomalies)
	f.dlqKeys = map[int64][]dlq.Entry{}
	for _, en := range entries {
		if en.Status != dlq.StatusPending || en.Change.Table.Name != "customers" {
			continue
		}
		f.dlqEntries++
		id, err := strconv.ParseInt(strings.TrimPrefix(en.Key(), "id="), 10, 64)
		if err != nil {
			return f, nil, nil, fmt.Errorf("DLQ entry %d: key %q", en.ID, en.Key())
		}
		f.dlqKeys[id] = append(f.dlqKeys[id], en)
	}
	for id := range f.dlqKeys {
		if c, ok := o.class[id]; ok && c == bothSides {
			f.dlqShared++
		} else {
			f.dlqSingle++
		}
	}
	keys := map[int64]bool{}
	for id := range o.want {
		keys[id] = true
	}
	for id := range ra {
		keys[id] = true
	}
	for id := range rb {
		keys[id] = true
	}
	for id := range keys {
		f.compared++
		want, a, b := o.want[id], ra[id], rb[id]
		_, unsure := o.uncertain[id]
		bad := false
		if !a.equal(b) {
			f.diverged++
			bad = true
		}
		if !unsure {
			if !want.equal(a) || !want.equal(b) {
				f.wrong++
				bad = true
			}
			for _, got := range []*row{a, b} {
				switch {
				case want == nil && got != nil:
					if _, ok := o.want[id]; ok {
						f.deletedPresent++
					}
				case want != nil && got == nil:
					f.missing++
				case want != nil:
					f.drift += abs(got.counter - want.counter)
				}
			}
		}
		if bad || f.dlqKeys[id] != nil {
			f.bad = append(f.bad, id)
		}
	}
	sort.Slice(f.bad, func(i, j int) bool { return f.bad[i] < f.bad[j] })
	return f, ra, rb, nil
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// settle waits, while the writers are paused or stopped, until both
// databases hold what the oracle expects (twice in a row) or nothing
// changes any more, and returns the figures; when they are not all zero it
// explains every key at fault. p is the running pgbisync. final: the
// writers stopped for good, and nothing may be applied after convergence.
func (e *env) settle(p *proc, o *oracle, final bool) (figures, time.Duration) {
	t := e.t
	t.Helper()
	start := time.Now()
	deadline := start.Add(pick(90*time.Second, 180*time.Second))
	var f figures
	var ra, rb map[int64]*row
	good, still := 0, 0
	var last string
	lastApplied := -1.0
	for good < 2 && still < 40 {
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-p.done:
			t.Fatalf("pgbisync exited while converging: %v\n%s", p.err, tail(p.output(), 4000))
		case <-time.After(500 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var err error
		f, ra, rb, err = e.measure(ctx, o)
		cancel()
		if err != nil {
			t.Logf("measure: %v", err)
			good, still = 0, 0
			continue
		}
		if f.ok() {
			good++
			continue
		}
		good = 0
		// Stop waiting when nothing has been applied for 20 s and the
		// figures stay the same.
		applied := metricSum(t, e.admin, "duplex_changes_applied_total")
		if s := f.String(); s == last && applied == lastApplied {
			still++
		} else {
			still = 0
		}
		last, lastApplied = f.String(), applied
	}
	took := time.Since(start)
	if f.ok() && !final {
		return f, took
	}
	if f.ok() {
		before := metricSum(t, e.admin, "duplex_changes_applied_total")
		time.Sleep(2 * time.Second)
		after := metricSum(t, e.admin, "duplex_changes_applied_total")
		require.Equal(t, before, after, "changes applied after quiescence")
		return f, took
	}
	t.Errorf("the sides did not reach the oracle's rows (%s after the writers stopped): %s\n%s", took.Round(time.Second), f, e.explain(o, f, ra, rb))
	return f, took
}

// explain describes every key at fault (at most 20): its class, its writes,
// what each side holds, its DLQ entries and both databases' agreement
// records.
func (e *env) explain(o *oracle, f figures, ra, rb map[int64]*row) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b strings.Builder
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, a := range o.anomalies {
		fmt.Fprintf(&b, "anomaly: %s\n", a)
	}
	for i, id := range f.bad {
		if i == 20 {
			fmt.Fprintf(&b, "... and %d more keys\n", len(f.bad)-i)
			break
		}
		fmt.Fprintf(&b, "key id=%d (%s)", id, o.className(id))
		if u, ok := o.uncertain[id]; ok {
			fmt.Fprintf(&b, " uncertain: %s", u)
		}
		fmt.Fprintf(&b, "\n  want %s\n  a    %s\n  b    %s\n", o.want[id], ra[id], rb[id])
		for _, h := range o.history[id] {
			fmt.Fprintf(&b, "  write %s\n", h)
		}
		for _, en := range f.dlqKeys[id] {
			fmt.Fprintf(&b, "  dlq %d %s %s: %s (%s from %s, change %s)\n", en.ID, en.Direction, en.Reason, en.Error, en.Change.Op, en.Change.Source, en.Change.ID)
		}
		for _, db := range []struct {
			name string
			db   *testenv.DB
		}{{"a", e.a}, {"b", e.b}} {
			rs, err := db.db.Pool.Query(ctx, `SELECT system, version, coalesce(convert_from("row", 'UTF8'), 'NULL'),
				coalesce(convert_from(peer, 'UTF8'), 'NULL'), peer_kind, coalesce(unknown::text, 'NULL'), updated_at
				FROM duplex.agreements WHERE sync = $1 AND tbl = $2 AND key = $3`, e.name, "public.customers", fmt.Sprintf("id=%d", id))
			if err != nil {
				fmt.Fprintf(&b, "  agreements on %s: %v\n", db.name, err)
				continue
			}
			recs, err := pgx.CollectRows(rs, func(r pgx.CollectableRow) (string, error) {
				var system, rw, peer, unknown string
				var version int64
				var kind int16
				var at time.Time
				err := r.Scan(&system, &version, &rw, &peer, &kind, &unknown, &at)
				return fmt.Sprintf("system=%s version=%d row=%s peer=%s peer_kind=%d unknown=%s at %s",
					system, version, rw, peer, kind, unknown, at.Format("15:04:05.000000")), err
			})
			if err != nil {
				fmt.Fprintf(&b, "  agreements on %s: %v\n", db.name, err)
			}
			if len(recs) == 0 {
				fmt.Fprintf(&b, "  agreement on %s: none\n", db.name)
			}
			for _, r := range recs {
				fmt.Fprintf(&b, "  agreement on %s: %s\n", db.name, r)
			}
		}
	}
	return b.String()
}

// keepLogs writes every pgbisync run's output to DUPLEX_CHAOS_LOGDIR, when
// set, as <test>.<n>.log.
func (e *env) keepLogs() {
	dir := os.Getenv("DUPLEX_CHAOS_LOGDIR")
	if dir == "" {
		return
	}
	e.mu.Lock()
	procs := slices.Clone(e.procs)
	e.mu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Logf("DUPLEX_CHAOS_LOGDIR: %v", err)
		return
	}
	base := strings.ReplaceAll(e.t.Name(), "/", "_")
	for i, p := range procs {
		path := filepath.Join(dir, fmt.Sprintf("%s.%d.log", base, i))
		if err := os.WriteFile(path, []byte(p.output()), 0o644); err != nil {
			e.t.Logf("DUPLEX_CHAOS_LOGDIR: %v", err)
		}
	}
}

// halfDone counts the keys whose last merge needed a write-back that did
// not commit: a record on one database (the merge's target) newer than the
// other's, with a Peer (the source's row as the merge read it) unlike its
// Row. Counted right after a SIGKILL, it says how many merges the kill
// left half-done (a write-back refused because the source changed
// meanwhile looks the same, and is repaired the same way).
func (e *env) halfDone(ctx context.Context) (int, error) {
	type rec struct {
		version int64
		needs   bool // Peer unlike Row: the merge wrote the source back
	}
	var recs [2]map[string]rec
	for i, db := range []*testenv.DB{e.a, e.b} {
		rs, err := db.Pool.Query(ctx, `SELECT key, version, peer_kind = 0 OR (peer_kind = 2 AND "row" IS NOT NULL)
			FROM duplex.agreements WHERE sync = $1 AND tbl = 'public.customers'`, e.name)
		if err != nil {
			return 0, err
		}
		recs[i] = map[string]rec{}
		for rs.Next() {
			var k string
			var r rec
			if err := rs.Scan(&k, &r.version, &r.needs); err != nil {
				return 0, err
			}
			recs[i][k] = r
		}
		if err := rs.Err(); err != nil {
			return 0, err
		}
	}
	n := 0
	for i := range 2 {
		for k, r := range recs[i] {
			if r.needs && r.version > recs[1-i][k].version {
				n++
			}
		}
	}
	return n, nil
}

// killInTransaction SIGKILLs p as soon as one of its connections has a
// write transaction open (a transaction id assigned, not yet committed) on
// either database, or after wait, and says which.
func (e *env) killInTransaction(p *proc, wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		var open []string
		err := e.a.Pool.QueryRow(context.Background(), `SELECT coalesce(array_agg(CASE datname WHEN $1 THEN 'a' ELSE 'b' END
				|| ' (' || state || ': ' || left(regexp_replace(query, '\s+', ' ', 'g'), 40) || ')' ORDER BY datname), '{}')
			FROM pg_stat_activity WHERE datname IN ($1, $2) AND application_name LIKE $3 AND backend_xid IS NOT NULL`,
			e.a.Name, e.b.Name, "pgbisync:"+e.name+":%").Scan(&open)
		if err != nil {
			p.kill()
			return fmt.Sprintf("(looking for a write transaction: %v)", err)
		}
		if len(open) > 0 {
			p.kill()
			return "in a write transaction on " + strings.Join(open, ", ")
		}
	}
	p.kill()
	return fmt.Sprintf("with no write transaction open in %s", wait)
}
