package reconcile_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/testenv"
	"github.com/duplexsync/duplex/reconcile"
	"github.com/duplexsync/duplex/resolve"
)

var customers = duplex.Table{Schema: "public", Name: "customers"}

const customersDDL = `CREATE TABLE customers (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	email text NOT NULL,
	status text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT '2026-01-01')`

// pair is a running two-way sync between two fresh databases.
type pair struct {
	a, b     *testenv.DB
	sync     *duplex.Sync
	syncName string
	dlq      *dlq.Memory
}

// startPair creates the customers table on two databases, runs seed on
// each, and runs a two-way sync between them with resolver until the test
// ends.
func startPair(t *testing.T, resolver duplex.Resolver, seedA, seedB string) *pair {
	t.Helper()
	p := &pair{a: testenv.Postgres(t), b: testenv.Postgres(t), syncName: testenv.UniqueName(t, "rec"),
		dlq: dlq.NewMemory(dlq.MemoryConfig{})}
	log := logger(t)
	for _, db := range []*testenv.DB{p.a, p.b} {
		testenv.RequireLogical(t, db)
		exec(t, db.Pool, customersDDL)
	}
	exec(t, p.a.Pool, seedA)
	exec(t, p.b.Pool, seedB)
	endpoint := func(name string, db *testenv.DB) duplex.Endpoint {
		src, err := pglogical.New(t.Context(), pglogical.Config{
			ConnString: db.URL, Sync: p.syncName, System: name, Tables: []duplex.Table{customers},
			SetReplicaIdentity: true, StatusInterval: 100 * time.Millisecond, Logger: log,
		})
		require.NoError(t, err)
		t.Cleanup(src.Close)
		require.NoError(t, src.Setup(t.Context(), false))
		app, err := applypg.New(t.Context(), db.Pool, applypg.Config{Sync: p.syncName, Target: name, Logger: log})
		require.NoError(t, err)
		t.Cleanup(func() { _ = app.DropOrigins(context.Background()) })
		return duplex.Endpoint{Name: name, Source: src, Applier: app}
	}
	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name: p.syncName, A: endpoint("a", p.a), B: endpoint("b", p.b),
		Resolver: resolver, DeadLetters: p.dlq, Logger: log,
		Options: duplex.Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
	})
	require.NoError(t, err)
	p.sync = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("sync did not stop within 30s")
		}
	})
	return p
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatal("test context ended")
		}
	}
}

func value(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) string {
	t.Helper()
	var v string
	err := pool.QueryRow(t.Context(), sql, args...).Scan(&v)
	require.NoError(t, err)
	return v
}

func rowsOf(t *testing.T, pool *pgxpool.Pool) map[int64]string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT id, row(name, email, status, updated_at)::text FROM customers`)
	require.NoError(t, err)
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var v string
		require.NoError(t, rows.Scan(&id, &v))
		out[id] = v
	}
	require.NoError(t, rows.Err())
	return out
}

// behindTheBack runs sql on db in a session under a replication origin of
// the sync (not the applier's), so the sync's change capture drops it, as
// it drops the sync's own writes.
func behindTheBack(t *testing.T, db *testenv.DB, syncName string, sql string) {
	t.Helper()
	origin := pglogical.OriginName(syncName) + ":behind_the_back"
	conn, err := db.Pool.Acquire(t.Context())
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(t.Context(), "SELECT pg_replication_origin_create($1)", origin)
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), "SELECT pg_replication_origin_session_setup($1)", origin)
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), sql)
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), "SELECT pg_replication_origin_session_reset()")
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), "SELECT pg_replication_origin_drop($1)", origin)
	require.NoError(t, err)
}

// TestParityFindsChangesMadeBehindTheSyncsBackAndReconcileRepairsThem: a
// running two-way sync; on side B rows are updated, deleted and inserted
// in a session the sync's capture ignores. The checker reports exactly the
// ranges concerned; the reconciler repairs them through Sync.Reconcile,
// where field authority decides (name belongs to a, status to b); then
// both sides are equal and the checker is clean.
func TestParityFindsChangesMadeBehindTheSyncsBackAndReconcileRepairsThem(t *testing.T) {
	t.Parallel()
	authority, err := resolve.ParseAuthority("customers.name=a,customers.email=a,customers.status=b")
	require.NoError(t, err)
	const seed = `INSERT INTO customers (id, name, email, status) SELECT i, 'n' || i, 'e' || i, 'new' FROM generate_series(1, 500) i`
	p := startPair(t, duplex.Chain(authority, resolve.DeadLetterAll()), seed, seed)

	// The sync works: a change on A reaches B.
	exec(t, p.a.Pool, `UPDATE customers SET email = 'synced' WHERE id = 1`)
	waitFor(t, "the update to reach b", func() bool {
		return value(t, p.b.Pool, `SELECT email FROM customers WHERE id = 1`) == "synced"
	})

	behindTheBack(t, p.b, p.syncName, `
		UPDATE customers SET name = 'renamed on b' WHERE id = 42;
		UPDATE customers SET status = 'paid' WHERE id = 250;
		DELETE FROM customers WHERE id = 333;
		INSERT INTO customers (id, name, email, status) VALUES (9999, 'only b', 'b@x', 'trial')`)
	// A change made normally afterwards reaches A: whatever came before it
	// in B's log was either delivered or dropped.
	exec(t, p.b.Pool, `UPDATE customers SET status = 'marker' WHERE id = 2`)
	waitFor(t, "the marker to reach a", func() bool {
		return value(t, p.a.Pool, `SELECT status FROM customers WHERE id = 2`) == "marker"
	})
	require.Equal(t, "n42", value(t, p.a.Pool, `SELECT name FROM customers WHERE id = 42`), "the sync did not see the change")
	require.Equal(t, "1", value(t, p.a.Pool, `SELECT count(*)::text FROM customers WHERE id = 333`))

	c, err := reconcile.NewChecker(p.a.Pool, p.b.Pool, reconcile.Config{
		Tables: []reconcile.TableConfig{{Table: customers}}, ChunkSize: 100,
		RecheckDelay: 50 * time.Millisecond, Logger: logger(t),
	})
	require.NoError(t, err)
	r, err := c.CheckTable(t.Context(), customers)
	require.NoError(t, err)
	require.Equal(t, []reconcile.Range{
		{Lo: nil, Hi: idKey(100), CountA: 100, CountB: 100},
		{Lo: idKey(200), Hi: idKey(300), CountA: 100, CountB: 100},
		{Lo: idKey(300), Hi: idKey(400), CountA: 100, CountB: 99},
		{Lo: idKey(500), Hi: nil, CountA: 0, CountB: 1},
	}, exported(r.Mismatched))
	require.Equal(t, int64(500), r.RowsA)
	require.Equal(t, int64(500), r.RowsB)

	rec, err := reconcile.NewReconciler(c, reconcile.ReconcilerConfig{Repair: p.sync.Reconcile})
	require.NoError(t, err)
	rr, err := rec.Reconcile(t.Context(), r)
	require.NoError(t, err)
	require.Equal(t, 4, rr.Differing)
	require.Equal(t, map[duplex.Outcome]int{duplex.OutcomeApplied: 3, duplex.OutcomeMerged: 1}, rr.Outcomes, "%+v", rr.Keys)

	a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
	require.Equal(t, a, b)
	require.Len(t, a, 501)
	require.Equal(t, "(n42,e42,new,\"2026-01-01 00:00:00+00\")", a[42], "a owns name: b's rename is undone")
	require.Equal(t, "(n250,e250,paid,\"2026-01-01 00:00:00+00\")", a[250], "b owns status: a takes it")
	require.Contains(t, a, int64(333), "the row b lost is copied back")
	require.Contains(t, a, int64(9999), "the row only b had is copied to a")

	r, err = c.CheckTable(t.Context(), customers)
	require.NoError(t, err)
	require.True(t, r.Clean(), "%+v", r.Mismatched)
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Empty(t, entries)
}

// TestOnboardingTwoSystemsThatAlreadyHoldData: A (a CRM) and B (billing)
// hold overlapping, different customers when the sync starts. Check and
// reconcile bring them together: rows on one side are copied, rows on
// both get name from A and status from B (field authority); the one row
// whose unowned email differs is dead-lettered and stays reported. Four
// keys are repaired at once. The
// sync then carries new changes as usual.
func TestOnboardingTwoSystemsThatAlreadyHoldData(t *testing.T) {
	t.Parallel()
	authority, err := resolve.ParseAuthority("customers.name=a,customers.status=b")
	require.NoError(t, err)
	p := startPair(t, duplex.Chain(authority),
		`INSERT INTO customers (id, name, email, status) SELECT i, 'crm ' || i, 'e' || i, 'lead' FROM generate_series(1, 300) i`,
		`INSERT INTO customers (id, name, email, status)
			SELECT i, 'billing ' || i, CASE WHEN i = 250 THEN 'other' ELSE 'e' || i END, 'paid ' || i FROM generate_series(200, 500) i`)
	c, err := reconcile.NewChecker(p.a.Pool, p.b.Pool, reconcile.Config{
		Tables: []reconcile.TableConfig{{Table: customers}}, ChunkSize: 64, RecheckDelay: -1, Logger: logger(t),
	})
	require.NoError(t, err)
	r, err := c.CheckTable(t.Context(), customers)
	require.NoError(t, err)
	require.Equal(t, int64(300), r.RowsA)
	require.Equal(t, int64(301), r.RowsB)
	rec, err := reconcile.NewReconciler(c, reconcile.ReconcilerConfig{Repair: p.sync.Reconcile, Concurrency: 4, Logger: logger(t)})
	require.NoError(t, err)
	rr, err := rec.Reconcile(t.Context(), r)
	require.NoError(t, err)
	require.Equal(t, 500, rr.Differing)
	require.Equal(t, 1, rr.Outcomes[duplex.OutcomeDeadLettered])
	require.Equal(t, 499, rr.Outcomes[duplex.OutcomeApplied]+rr.Outcomes[duplex.OutcomeMerged])

	a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
	require.Len(t, a, 500)
	require.Len(t, b, 500)
	for id := int64(1); id <= 500; id++ {
		if id == 250 {
			require.NotEqual(t, a[id], b[id], "the conflict nobody owns is left for an operator")
			continue
		}
		require.Equal(t, a[id], b[id], "row %d", id)
		var want string
		switch {
		case id < 200:
			want = fmt.Sprintf("(\"crm %d\",e%d,lead,\"2026-01-01 00:00:00+00\")", id, id)
		case id <= 300:
			want = fmt.Sprintf("(\"crm %d\",e%d,\"paid %d\",\"2026-01-01 00:00:00+00\")", id, id, id)
		default:
			want = fmt.Sprintf("(\"billing %d\",e%d,\"paid %d\",\"2026-01-01 00:00:00+00\")", id, id, id)
		}
		require.Equal(t, want, a[id])
	}
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "id=250", entries[0].Change.Key.String())
	require.Contains(t, entries[0].Conflict.Fields, "email")
	require.Contains(t, entries[0].Error, "email", "the unowned field is named")

	r, err = c.CheckTable(t.Context(), customers)
	require.NoError(t, err)
	require.Len(t, r.Mismatched, 1, "only the dead-lettered row still differs")
	require.Equal(t, idKey(192), r.Mismatched[0].Lo)

	// The sync goes on as usual.
	exec(t, p.a.Pool, `UPDATE customers SET name = 'after onboarding' WHERE id = 450`)
	waitFor(t, "the update to reach b", func() bool {
		return value(t, p.b.Pool, `SELECT name FROM customers WHERE id = 450`) == "after onboarding"
	})
}
