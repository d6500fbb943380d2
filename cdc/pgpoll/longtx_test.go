package pgpoll_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pgpoll"
	"github.com/duplexsync/duplex/internal/testenv"
)

// Under load: rows 1..hotRows updated by concurrent short transactions;
// rows longBase+1..longBase+longTxs each updated once by a long transaction.
const (
	hotRows  = 200
	writers  = 3
	longTxs  = 5
	longBase = 1000
)

// loadResult is what the load committed.
type loadResult struct {
	final    map[int64]string // id -> note, as committed
	longOnes map[int64]string // the long transactions' writes
}

// runLoad writes to items with concurrent writers and long transactions.
// Each long transaction begins, updates its row (its updated_at is the
// time of the update: early), and commits only once the poller under test
// has seen a timestamp later than its row's (seen), plus a short sleep: a
// poller that moves its watermark past that timestamp skips the row.
func runLoad(t *testing.T, db *testenv.DB, seen func() time.Time) loadResult {
	t.Helper()
	ctx := t.Context()
	// A pool of its own: the long transactions hold connections.
	pcfg, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	pcfg.MaxConns = writers + longTxs + 2
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	defer pool.Close()
	var stop atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	var writes atomic.Int64
	for w := range writers {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; !stop.Load() || i < 100; i++ {
				id := 1 + rng.Int64N(hotRows)
				if _, err := pool.Exec(gctx, "UPDATE items SET n = n + 1, note = $2 WHERE id = $1", id, fmt.Sprintf("w%d-%d", w, i)); err != nil {
					return fmt.Errorf("writer %d: %w", w, err)
				}
				writes.Add(1)
			}
			return nil
		})
	}
	var lg errgroup.Group
	for k := range longTxs {
		lg.Go(func() error {
			id := int64(longBase + k + 1)
			return pgx.BeginFunc(gctx, pool, func(tx pgx.Tx) error {
				var ts time.Time
				if err := tx.QueryRow(gctx, "UPDATE items SET note = $2 WHERE id = $1 RETURNING updated_at", id, fmt.Sprintf("long-%d", k)).Scan(&ts); err != nil {
					return err
				}
				deadline := time.Now().Add(waitFor)
				for !seen().After(ts) {
					if time.Now().After(deadline) {
						return fmt.Errorf("the poller never passed the long transaction's timestamp %v (seen %v, %d writes)", ts, seen(), writes.Load())
					}
					time.Sleep(2 * time.Millisecond)
				}
				time.Sleep(50 * time.Millisecond) // a long transaction
				return nil
			})
		})
	}
	require.NoError(t, lg.Wait())
	stop.Store(true)
	require.NoError(t, g.Wait())
	t.Logf("%d short updates, %d long transactions", writes.Load(), longTxs)

	res := loadResult{final: map[int64]string{}, longOnes: map[int64]string{}}
	rows, err := db.Pool.Query(ctx, "SELECT id, coalesce(note, '') FROM items")
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		var note string
		require.NoError(t, rows.Scan(&id, &note))
		res.final[id] = note
	}
	require.NoError(t, rows.Err())
	for k := range longTxs {
		res.longOnes[int64(longBase+k+1)] = fmt.Sprintf("long-%d", k)
	}
	return res
}

func seedLoad(t *testing.T, db *testenv.DB) {
	t.Helper()
	_, err := db.Pool.Exec(t.Context(), "INSERT INTO items (id, name, n) SELECT i, 'row', 0 FROM generate_series(1, $1::int) i", hotRows)
	require.NoError(t, err)
	_, err = db.Pool.Exec(t.Context(), "INSERT INTO items (id, name, n) SELECT i, 'long', 0 FROM generate_series($1::int + 1, $1::int + $2::int) i", longBase, longTxs)
	require.NoError(t, err)
}

// TestLongTransactionsNeverDropRows: with concurrent writers and long
// transactions that commit rows timestamped before what the source already
// delivered, every committed row version that is final arrives, and the
// long transactions' writes arrive too.
func TestLongTransactionsNeverDropRows(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	seedLoad(t, h.db)
	c := consume(t, h.newSource(), "", true)
	c.waitFor(hotRows + longTxs)

	res := runLoad(t, h.db, c.maxSeen)

	notes := func() map[int64]string {
		out := map[int64]string{}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, ch := range c.last {
			id := ch.Key[0].Value.(int64)
			note, _ := ch.After["note"].(string)
			out[id] = note
		}
		return out
	}
	deadline := time.Now().Add(waitFor)
	for !maps.Equal(notes(), res.final) {
		if time.Now().After(deadline) {
			got := notes()
			for id, want := range res.final {
				if got[id] != want {
					t.Errorf("id=%d: last delivered note %q, committed %q", id, got[id], want)
				}
			}
			t.FailNow()
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Every long transaction's update was delivered as an update with the
	// image before it.
	for id, note := range res.longOnes {
		var found bool
		for _, ch := range c.snapshot() {
			if ch.Key[0].Value == id && ch.After["note"] == note {
				found = true
				require.Equal(t, duplex.OpUpdate, ch.Op)
				require.Equal(t, "long", ch.Before["name"])
				require.Nil(t, ch.Before["note"])
			}
		}
		require.True(t, found, "long transaction's write to id=%d was not delivered", id)
	}
	c.stop()
}

// naivePoller is the textbook query: WHERE updated_at > :since, with since
// the largest timestamp seen.
type naivePoller struct {
	mu    sync.Mutex
	since time.Time
	notes map[int64]string
}

func (p *naivePoller) maxSeen() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.since
}

func (p *naivePoller) poll(ctx context.Context, db *testenv.DB) (int, error) {
	since := p.maxSeen()
	rows, err := db.Pool.Query(ctx, "SELECT id, coalesce(note, ''), updated_at FROM items WHERE updated_at > $1 ORDER BY updated_at LIMIT 1000", since)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id int64
		var note string
		var ts time.Time
		if err := rows.Scan(&id, &note, &ts); err != nil {
			return n, err
		}
		p.mu.Lock()
		p.notes[id] = note
		if ts.After(p.since) {
			p.since = ts
		}
		p.mu.Unlock()
		n++
	}
	return n, rows.Err()
}

// TestTextbookPollingMissesRows runs the same load against the textbook
// `WHERE updated_at > :since` poller: the long transactions' rows commit
// behind its watermark and are never seen. This is what
// TestLongTransactionsNeverDropRows guards against, and shows the load
// exposes it.
func TestTextbookPollingMissesRows(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	seedLoad(t, h.db)
	p := &naivePoller{notes: map[int64]string{}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if _, err := p.poll(ctx, h.db); err != nil && ctx.Err() == nil {
				t.Logf("naive poll: %v", err)
				done <- err
				return
			}
			time.Sleep(5 * time.Millisecond) // the poll interval
		}
		done <- nil
	}()
	res := runLoad(t, h.db, p.maxSeen)
	// Let it catch up: one more poll after the load is over.
	cancel()
	require.NoError(t, <-done)
	for {
		n, err := p.poll(t.Context(), h.db)
		require.NoError(t, err)
		if n == 0 {
			break
		}
	}
	missed := 0
	for id, note := range res.longOnes {
		if p.notes[id] != note {
			missed++
		}
	}
	t.Logf("the textbook poller missed %d of %d long transactions' writes", missed, longTxs)
	require.Positive(t, missed, "the textbook poller saw every long transaction's write: the load does not expose the bug")
}

// TestLongTransactionsHiddenSessions runs the load with a source whose role
// cannot see the writers' sessions in pg_stat_activity (no
// pg_read_all_stats): the xid fallback (pg_snapshot_xmin) must still hold
// the watermark back.
func TestLongTransactionsHiddenSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	seedLoad(t, h.db)
	src := hiddenSource(t, h)
	c := consume(t, src, "", true)
	c.waitFor(hotRows + longTxs)
	res := runLoad(t, h.db, c.maxSeen)
	c.requireLast(res.final)
	c.stop()
}

// TestHiddenSessionsSlowFirstWrite: with the writers' sessions hidden, an
// insert whose BEFORE trigger takes the row's timestamp and then pauses
// (50 ms, as a busy machine's scheduler may) before the row is written and
// the transaction gets its id is still delivered, while short transactions
// move the watermark on meanwhile. With one pass of margin (5 ms here)
// every such row was lost. (CI once lost 4 rows of
// TestLongTransactionsHiddenSessions under load; that this was the cause
// there is not proven: its updates get their ids before the trigger runs.)
func TestHiddenSessionsSlowFirstWrite(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	seedLoad(t, h.db)
	_, err := h.db.Pool.Exec(t.Context(), `CREATE FUNCTION slow_touch() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN NEW.updated_at := clock_timestamp(); IF NEW.note = 'slow' THEN PERFORM pg_sleep(0.05); END IF; RETURN NEW; END $$;
		CREATE TRIGGER items_slow_insert BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION slow_touch()`)
	require.NoError(t, err)
	src := hiddenSource(t, h)
	c := consume(t, src, "", true)
	c.waitFor(hotRows + longTxs)
	var stop atomic.Bool
	var g errgroup.Group
	g.Go(func() error {
		for i := 0; !stop.Load(); i++ {
			if _, err := h.db.Pool.Exec(t.Context(), "UPDATE items SET note = $2 WHERE id = $1", 1+i%hotRows, fmt.Sprint("short-", i)); err != nil {
				return err
			}
		}
		return nil
	})
	final := map[int64]string{}
	for i := range 5 {
		id := int64(longBase + 100 + i)
		_, err := h.db.Pool.Exec(t.Context(), "INSERT INTO items (id, name, n, note) VALUES ($1, 'slow', 0, 'slow')", id)
		require.NoError(t, err)
		final[id] = "slow"
	}
	stop.Store(true)
	require.NoError(t, g.Wait())
	c.requireLast(final)
	c.stop()
}

// hiddenSource returns a source of h's table whose role sees the other
// sessions' rows in pg_stat_activity but not what they do.
func hiddenSource(t *testing.T, h *harness) *pgpoll.Source {
	t.Helper()
	role := testenv.UniqueName(t, "poller")
	ctx := t.Context()
	for _, sql := range []string{
		"CREATE ROLE " + role + " LOGIN",
		"GRANT USAGE ON SCHEMA duplex TO " + role,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA duplex TO " + role,
		"GRANT SELECT ON items TO " + role,
	} {
		_, err := h.db.Pool.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	t.Cleanup(func() {
		_, _ = h.db.Pool.Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = h.db.Pool.Exec(context.Background(), "DROP ROLE "+role)
	})
	u, err := url.Parse(h.db.URL)
	require.NoError(t, err)
	u.User = url.User(role)
	cfg := h.config()
	cfg.ConnString = u.String()
	src := h.sourceWith(cfg)

	// The role sees other sessions' rows, but not what they do.
	var hidden int
	require.NoError(t, src.Setup(ctx))
	conn, err := pgx.Connect(ctx, cfg.ConnString)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type IS NULL").Scan(&hidden))
	require.Positive(t, hidden, "other sessions are hidden from the role")
	return src
}

// requireLast waits until the last change c received of every key of final
// carries its note.
func (c *consumer) requireLast(final map[int64]string) {
	c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		c.mu.Lock()
		missing := 0
		for id, want := range final {
			ch, ok := c.last[duplex.Key{{Name: "id", Value: id}}.String()]
			if got, _ := ch.After["note"].(string); !ok || got != want {
				missing++
			}
		}
		c.mu.Unlock()
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d rows' last committed version never delivered", missing)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
