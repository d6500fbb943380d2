package applypg_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/testenv"
)

// faultyApplier breaks the connection of some of its applies, in turn
// before the writes, before COMMIT, and after COMMIT reached the server.
type faultyApplier struct {
	*applypg.Applier
	f     *faults
	calls atomic.Int64
	kinds [4]atomic.Int64
}

func (a *faultyApplier) Apply(ctx context.Context, b *duplex.Batch) error {
	n := a.calls.Add(1)
	if n%3 == 0 {
		k := fault(1 + (n/3)%3)
		a.kinds[k].Add(1)
		a.f.arm(k)
	}
	err := a.Applier.Apply(ctx, b)
	a.f.arm(noFault)
	return err
}

// TestPipelineExactlyOnceThroughFaults runs a Pipeline from a logical
// replication source on database A to the Applier on database B while a
// user writes to A, and breaks the Applier's connection in a third of the
// applies (before the writes, before COMMIT, after COMMIT). Every change
// must be applied exactly once (a trigger on B records every row write),
// the ledger must hold every change once, and B must end equal to A.
func TestPipelineExactlyOnceThroughFaults(t *testing.T) {
	t.Parallel()
	dbA, dbB := testenv.Postgres(t), testenv.Postgres(t)
	testenv.RequireLogical(t, dbA)
	ctx := t.Context()
	exec(t, dbA, itemsDDL)
	exec(t, dbB, itemsDDL)
	exec(t, dbB, `CREATE TABLE audit (seq bigserial PRIMARY KEY, op text NOT NULL, id bigint NOT NULL, n bigint);
		CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF TG_OP = 'DELETE' THEN
				INSERT INTO audit (op, id, n) VALUES (TG_OP, OLD.id, OLD.n);
			ELSE
				INSERT INTO audit (op, id, n) VALUES (TG_OP, NEW.id, NEW.n);
			END IF;
			RETURN NULL;
		END $$;
		CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION audit();
		ALTER TABLE items ENABLE ALWAYS TRIGGER audit; -- fires on applied rows too`)

	sync := testenv.UniqueName(t, "s")
	src, err := pglogical.New(ctx, pglogical.Config{
		ConnString: dbA.URL, Sync: sync, System: "a", Tables: []duplex.Table{items}, SetReplicaIdentity: true,
		BatchSize: 200, Linger: time.Millisecond, StatusInterval: 50 * time.Millisecond, Logger: logger(t),
	})
	require.NoError(t, err)
	t.Cleanup(src.Close)
	require.NoError(t, src.Setup(ctx, false))

	pool, f := faultyPool(t, dbB)
	target := &faultyApplier{Applier: newApplier(t, &testenv.DB{URL: dbB.URL, Name: dbB.Name, Pool: pool}, sync), f: f}
	dead := dlq.NewMemory(dlq.MemoryConfig{})
	p, err := duplex.NewPipeline(&duplex.Config{
		Name: sync, Direction: duplex.Direction{From: "a", To: "b"}, Source: src, Target: target, DeadLetters: dead,
		Logger: logger(t),
		Options: duplex.Options{BatchSize: 100, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			ShutdownTimeout: 20 * time.Second},
	})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(runCtx) }()

	// The user's workload on A: every statement changes exactly one row.
	rng := rand.New(rand.NewPCG(1, 2))
	var live []int64
	next, changes := int64(1), 0
	for round := 0; round < 120; round++ {
		require.NoError(t, pgx.BeginFunc(ctx, dbA.Pool, func(tx pgx.Tx) error {
			for range 1 + rng.IntN(20) {
				switch r := rng.IntN(10); {
				case r < 4 || len(live) < 5:
					if _, err := tx.Exec(ctx, "INSERT INTO items (id, name, n) VALUES ($1, $2, 0)", next, fmt.Sprintf("row %d", next)); err != nil {
						return err
					}
					live = append(live, next)
					next++
				case r < 9:
					id := live[rng.IntN(len(live))]
					if _, err := tx.Exec(ctx, "UPDATE items SET n = n + 1, note = $2 WHERE id = $1", id, fmt.Sprintf("round %d", round)); err != nil {
						return err
					}
				default:
					i := rng.IntN(len(live))
					if _, err := tx.Exec(ctx, "DELETE FROM items WHERE id = $1", live[i]); err != nil {
						return err
					}
					live = append(live[:i], live[i+1:]...)
				}
				changes++
			}
			return nil
		}))
	}

	snapshot := func(db *testenv.DB) string {
		var s string
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT coalesce(string_agg(format('%s|%s|%s|%s', id, name, n, note), ',' ORDER BY id), '')
			FROM items`).Scan(&s))
		return s
	}
	want := snapshot(dbA)
	requireEventually(t, 3*time.Minute, func() bool { return snapshot(dbB) == want }, "B converges to A")
	stop()
	require.NoError(t, <-runDone)

	entries, total, err := dead.List(ctx, dlq.Filter{})
	require.NoError(t, err)
	require.Zero(t, total, "nothing dead-lettered: %v", entries)
	require.Equal(t, changes, count(t, dbB, "SELECT count(*) FROM audit"), "one row write per change on A")
	require.Zero(t, count(t, dbB, "SELECT count(*) FROM (SELECT op, id, n FROM audit GROUP BY 1, 2, 3 HAVING count(*) > 1) d"),
		"no change applied twice")
	require.Equal(t, changes, count(t, dbB, "SELECT count(*) FROM duplex.applied WHERE sync = $1 AND target = 'b'", sync),
		"the ledger holds every change once")
	for k := killBeforeWrites; k <= loseCommitAck; k++ {
		require.Positive(t, target.kinds[k].Load(), "fault %s injected", k)
	}
	require.Equal(t, int64(target.kinds[1].Load()+target.kinds[2].Load()+target.kinds[3].Load()), int64(f.fired.Load()),
		"every armed fault fired")
	t.Logf("%d changes, %d applies, %d faults injected", changes, target.calls.Load(), f.fired.Load())
}
