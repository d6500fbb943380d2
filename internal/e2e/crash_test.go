package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/crashpoint"
	"github.com/duplexsync/duplex/resolve"
)

// The crash-point kit of crash_test.go in the root package, on two real
// PostgreSQL databases: pglogical sources, applypg Appliers (records in the
// apply transaction), the sync killed at one Apply, before or after its
// commit, then restarted.

// crashEdits makes user edits on both databases: odd ids are edited by one
// side only (id%4 == 1: a, 3: b: names, statuses, visits), even ids get
// visits increments from both (CounterDelta adds them). want tracks the
// rows as rowsOf renders them.
type crashState struct {
	name, status map[int64]string
	visits       map[int64]int64
}

func (s *crashState) edits(t *testing.T, p *pair, rnd *rand.Rand, n, rows int) {
	for range n {
		id := int64(1 + rnd.IntN(rows))
		pool := p.a.Pool
		if id%2 == 0 && rnd.IntN(2) == 1 || id%4 == 3 {
			pool = p.b.Pool
		}
		switch {
		case id%2 == 0 || rnd.IntN(3) == 0:
			exec(t, pool, `UPDATE customers SET visits = visits + 1 WHERE id = $1`, id)
			s.visits[id]++
		case rnd.IntN(2) == 0:
			v := fmt.Sprint("name", rnd.IntN(1000))
			exec(t, pool, `UPDATE customers SET name = $2 WHERE id = $1`, id, v)
			s.name[id] = v
		default:
			v := fmt.Sprint("status", rnd.IntN(1000))
			exec(t, pool, `UPDATE customers SET status = $2 WHERE id = $1`, id, v)
			s.status[id] = v
		}
	}
}

func (s *crashState) want(rows int) map[int64]string {
	out := map[int64]string{}
	for id := int64(1); id <= int64(rows); id++ {
		out[id] = fmt.Sprintf("(%s,e%d,%s,%d)", s.name[id], id, s.status[id], s.visits[id])
	}
	return out
}

func crashOnPostgres(t *testing.T, seed uint64, at int, after bool) {
	const rows = 12
	rnd := rand.New(rand.NewPCG(seed, 11))
	c := crashpoint.New() // armed once started: the seeded rows' records are written first
	p := startPairOf(t, []duplex.Table{customers}, resolve.CounterDelta("visits"), nil, rows, func(pool *pgxpool.Pool) {
		exec(t, pool, ddl)
		exec(t, pool, `INSERT INTO customers (id, name, email, status, updated_at)
			SELECT i, 'n' || i, 'e' || i, 'new', '2026-01-01' FROM generate_series(1, $1) i`, rows)
	}, func(p *pair) {
		p.applier = func(_ string, a *applypg.Applier) duplex.Applier { return c.Wrap(a) }
	})
	c.Arm(at, after, p.stop)
	s := &crashState{name: map[int64]string{}, status: map[int64]string{}, visits: map[int64]int64{}}
	for id := int64(1); id <= rows; id++ {
		s.name[id], s.status[id] = fmt.Sprint("n", id), "new"
	}
	s.edits(t, p, rnd, 30, rows)
	select {
	case <-c.Dead():
	case <-time.After(20 * time.Second):
		t.Fatalf("seed %d: no crash at apply %d in 20s (%d applies)", seed, at, c.Calls())
	}
	p.halt(t)
	s.edits(t, p, rnd, 10, rows)
	c.Disarm()
	p.start(t)
	want := s.want(rows)
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, b := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
		if fmt.Sprint(a) == fmt.Sprint(want) && fmt.Sprint(b) == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			require.Equal(t, want, a, "seed %d, crash at apply %d (after commit %v): a", seed, at, after)
			require.Equal(t, want, b, "seed %d, crash at apply %d (after commit %v): b", seed, at, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{Limit: 100})
	require.NoError(t, err)
	require.Empty(t, entries, "seed %d, crash at apply %d (after commit %v): nothing conflicts", seed, at, after)
}

// TestCrashPointsOnPostgres kills a two-way Sync of two PostgreSQL
// databases at one Apply (before or after its commit) per seed, edits
// more, restarts it and checks the oracle: every edit counted once, the
// counters exact, the DLQ empty. DUPLEX_CRASH_SEEDS sets the number of
// seeds (make chaos runs more).
func TestCrashPointsOnPostgres(t *testing.T) {
	t.Parallel()
	seeds := 4
	if n, err := fmt.Sscan(os.Getenv("DUPLEX_CRASH_SEEDS"), &seeds); n != 1 || err != nil {
		seeds = 4
	}
	for seed := range uint64(seeds) {
		rnd := rand.New(rand.NewPCG(seed, 5))
		at, after := 1+rnd.IntN(6), rnd.IntN(2) == 1
		t.Run(fmt.Sprintf("seed=%d/at=%d/after=%v", seed, at, after), func(t *testing.T) {
			t.Parallel()
			crashOnPostgres(t, seed, at, after)
		})
	}
}
