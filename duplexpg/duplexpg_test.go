package duplexpg_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/duplexpg"
	"github.com/duplexsync/duplex/internal/testenv"
)

var customers = duplex.Table{Schema: "public", Name: "customers"}

// pair is two fresh databases with a customers table and a sync name.
type pair struct {
	a, b *testenv.DB
	name string
}

func newPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{a: testenv.Postgres(t), b: testenv.Postgres(t), name: testenv.UniqueName(t, "dpg")}
	testenv.RequireLogical(t, p.a)
	for _, db := range []*testenv.DB{p.a, p.b} {
		_, err := db.Pool.Exec(t.Context(), `CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL,
			updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
			INSERT INTO customers (id, name, updated_at) VALUES (1, 'Ada', '2026-01-01')`)
		require.NoError(t, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := p.a.Pool.Exec(ctx, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE starts_with(roname, $1)`, "duplex:"+p.name+":")
		if err != nil {
			t.Errorf("drop the replication origins of %s: %v", p.name, err)
		}
	})
	return p
}

// open opens both endpoints, closed when the test ends.
func (p *pair) open(t *testing.T, logger *slog.Logger) (a, b *duplexpg.Endpoint) {
	t.Helper()
	ends := make([]*duplexpg.Endpoint, 2)
	for i, db := range []*testenv.DB{p.a, p.b} {
		e, err := duplexpg.Open(t.Context(), duplexpg.EndpointConfig{Sync: p.name, System: []string{"a", "b"}[i], ConnString: db.URL, Logger: logger})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, e.Close()) })
		ends[i] = e
	}
	return ends[0], ends[1]
}

// runner is a Sync or a Pipeline.
type runner interface {
	Run(ctx context.Context) error
	Ready() <-chan struct{}
}

// start runs s until the test ends, or until the returned stop, which
// returns Run's error; start returns once s streams.
func start(t *testing.T, s runner) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { require.NoError(t, stop()) })
	select {
	case <-s.Ready():
	case err := <-done:
		done <- err
		t.Fatalf("stopped before it was ready: %v", err)
	}
	return stop
}

// waitName waits until customer 1 is named want on db.
func waitName(t *testing.T, db *testenv.DB, want string) {
	t.Helper()
	var got string
	require.Eventually(t, func() bool {
		require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT name FROM customers WHERE id = 1`).Scan(&got))
		return got == want
	}, time.Minute, 20*time.Millisecond, "customer 1 on %s: %q, want %q", db.Name, got, want)
}

func quiet(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// TestSyncRunsWithMetricsAndRefusesASecondInstance builds a sync with a
// registry, checks that an edit converges and the metrics are registered,
// then that a second instance of the same sync (other endpoints, same
// names) is refused with an error naming the sync, while the first runs.
func TestSyncRunsWithMetricsAndRefusesASecondInstance(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	a, b := p.open(t, quiet(t))
	reg := prometheus.NewRegistry()
	s, err := duplexpg.NewSync(t.Context(), a, b, duplexpg.Config{Tables: []duplex.Table{customers}, Registerer: reg, Logger: quiet(t)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	require.Equal(t, "lww(updated_at, skew 500ms)", s.Policy())
	start(t, s)
	_, err = p.b.Pool.Exec(t.Context(), `UPDATE customers SET name = 'from b', updated_at = clock_timestamp() WHERE id = 1`)
	require.NoError(t, err)
	waitName(t, p.a, "from b")

	families, err := reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	require.Contains(t, names, "duplex_changes_applied_total")
	require.Contains(t, names, "duplex_dlq_depth")
	require.Contains(t, names, "duplex_slot_retained_wal_bytes")

	a2, b2 := p.open(t, quiet(t))
	_, err = duplexpg.NewSync(t.Context(), a2, b2, duplexpg.Config{Tables: []duplex.Table{customers}, LockWait: -1, Logger: quiet(t)})
	held, ok := errors.AsType[*duplexpg.LockHeldError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, p.name, held.Sync)
	require.ErrorContains(t, err, "a: another instance of sync "+p.name+" is already running on database "+p.a.Name)
	require.ErrorContains(t, err, "(lock held by backend pid ")
	var slots int
	require.NoError(t, p.b.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, p.b.Name).Scan(&slots))
	require.Equal(t, 1, slots, "the refused instance created nothing beside the first one's slot")

	_, err = p.a.Pool.Exec(t.Context(), `UPDATE customers SET name = 'from a', updated_at = clock_timestamp() WHERE id = 1`)
	require.NoError(t, err)
	waitName(t, p.b, "from a")
}

// syncedOnce runs a sync on p until an edit on a reached b (so b holds a
// checkpoint of a's source), and stops it.
func syncedOnce(t *testing.T, p *pair) {
	t.Helper()
	a, b := p.open(t, quiet(t))
	s, err := duplexpg.NewSync(t.Context(), a, b, duplexpg.Config{Tables: []duplex.Table{customers}, Logger: quiet(t)})
	require.NoError(t, err)
	stop := start(t, s)
	_, err = p.a.Pool.Exec(t.Context(), `UPDATE customers SET name = 'first run', updated_at = clock_timestamp() WHERE id = 1`)
	require.NoError(t, err)
	waitName(t, p.b, "first run")
	require.NoError(t, stop())
	require.NoError(t, s.Close())
	require.NoError(t, errors.Join(a.Close(), b.Close()))
}

// TestLostSlotIsRefusedUnlessRecreated drops a's slot after the sync ran:
// the next start refuses it, naming the slot; with RecreateSlots it
// starts, warns, and syncs again.
func TestLostSlotIsRefusedUnlessRecreated(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	syncedOnce(t, p)
	slot := pglogical.SlotName(p.name, "a")
	// The walsender of the stopped sync ends after its client left: the
	// slot is active until then.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := p.a.Pool.Exec(t.Context(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, slot)
		assert.NoError(c, err)
		var n int
		assert.NoError(c, p.a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n))
		assert.Zero(c, n, "slot %s still there", slot)
	}, 30*time.Second, 20*time.Millisecond)

	a, b := p.open(t, quiet(t))
	_, err := duplexpg.NewSync(t.Context(), a, b, duplexpg.Config{Tables: []duplex.Table{customers}, Logger: quiet(t)})
	require.ErrorContains(t, err, "a: pglogical: replication slot "+slot+" does not exist, but the sync has a stored position")
	require.ErrorContains(t, err, "(RecreateSlots re-creates it)")

	var logs testenv.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := duplexpg.NewSync(t.Context(), a, b, duplexpg.Config{Tables: []duplex.Table{customers}, RecreateSlots: true, Logger: logger})
	require.NoError(t, err, "the refused start released the lock")
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	require.Contains(t, logs.String(), `level=WARN msg="replication slot was lost after the sync started; re-creating it`)
	require.Contains(t, logs.String(), "slot="+slot+" lost=dropped")
	start(t, s)
	_, err = p.a.Pool.Exec(t.Context(), `UPDATE customers SET name = 'after the new slot', updated_at = clock_timestamp() WHERE id = 1`)
	require.NoError(t, err)
	waitName(t, p.b, "after the new slot")
}

// TestRefusesBeforeCreatingAnything checks errors found before anything
// is created: endpoints of different syncs, a table without a primary key.
func TestRefusesBeforeCreatingAnything(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	_, err := p.b.Pool.Exec(t.Context(), `CREATE TABLE nokey (x int)`)
	require.NoError(t, err)
	a, _ := p.open(t, quiet(t))
	other, err := duplexpg.Open(t.Context(), duplexpg.EndpointConfig{Sync: p.name + "_x", System: "b", ConnString: p.b.URL})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, other.Close()) })
	_, err = duplexpg.NewSync(t.Context(), a, other, duplexpg.Config{Tables: []duplex.Table{customers}})
	require.EqualError(t, err, `duplexpg: the endpoints belong to different syncs: a to "`+p.name+`", b to "`+p.name+`_x"`)

	_, b := p.open(t, quiet(t))
	_, err = duplexpg.NewSync(t.Context(), a, b, duplexpg.Config{Tables: []duplex.Table{customers, {Schema: "public", Name: "nokey"}}, Logger: quiet(t)})
	require.ErrorContains(t, err, "a: table public.nokey does not exist")
	require.ErrorContains(t, err, "b: table public.nokey has no primary key")
	var slots int
	require.NoError(t, p.a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_replication_slots WHERE database IN ($1, $2)`, p.a.Name, p.b.Name).Scan(&slots))
	require.Zero(t, slots)
}

// TestPipelineOneWayWithRedis runs a one-way Pipeline from a to b with the
// Redis dedup: an edit on a reaches b, one on b stays there, and the marks
// are under the sync's Redis prefix.
func TestPipelineOneWayWithRedis(t *testing.T) {
	t.Parallel()
	p := newPair(t)
	rd := testenv.Redis(t)
	a, b := p.open(t, quiet(t))
	pl, err := duplexpg.NewPipeline(t.Context(), a, b, duplexpg.Config{
		Tables: []duplex.Table{customers}, Redis: rd.Client, RedisPrefix: rd.Prefix, Logger: quiet(t),
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pl.Close()) })
	start(t, pl)
	_, err = p.b.Pool.Exec(t.Context(), `INSERT INTO customers (id, name) VALUES (2, 'only on b')`)
	require.NoError(t, err)
	_, err = p.a.Pool.Exec(t.Context(), `UPDATE customers SET name = 'from a', updated_at = clock_timestamp() WHERE id = 1`)
	require.NoError(t, err)
	waitName(t, p.b, "from a")
	var onA int
	require.NoError(t, p.a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM customers WHERE id = 2`).Scan(&onA))
	require.Zero(t, onA, "one way: b's rows stay on b")
	require.Eventually(t, func() bool { // marked after the apply commits
		keys, err := rd.Client.Keys(t.Context(), rd.Prefix+p.name+":b:*").Result()
		require.NoError(t, err)
		return len(keys) > 0
	}, time.Minute, 20*time.Millisecond, "the applied change is marked in Redis")
}
