package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
	"github.com/duplexsync/duplex/resolve"
)

// unruly delivers every batch twice, the second time with the changes
// shuffled across keys (each key's changes keep their order), as a source
// reconnecting mid-batch or a broker redelivering out of order would.
type unruly struct {
	duplex.ChangeSource
	mu         sync.Mutex
	rnd        *rand.Rand
	deliveries int
}

func (u *unruly) Stream(ctx context.Context, from duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	return u.ChangeSource.Stream(ctx, from, func(ctx context.Context, batch []duplex.Change) error {
		if err := fn(ctx, batch); err != nil {
			return err
		}
		u.mu.Lock()
		again := u.shuffle(batch)
		u.deliveries += len(batch)
		u.mu.Unlock()
		return fn(ctx, again)
	})
}

// shuffle interleaves the per-key sequences of batch in a random order.
func (u *unruly) shuffle(batch []duplex.Change) []duplex.Change {
	byKey := map[string][]duplex.Change{}
	var keys []string
	for _, c := range batch {
		k := c.Table.String() + " " + c.Key.String()
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], c)
	}
	out := make([]duplex.Change, 0, len(batch))
	for len(keys) > 0 {
		i := u.rnd.IntN(len(keys))
		k := keys[i]
		out = append(out, byKey[k][0])
		if byKey[k] = byKey[k][1:]; len(byKey[k]) == 0 {
			keys = append(keys[:i], keys[i+1:]...)
		}
	}
	return out
}

// TestDuplicateAndReorderedDeliveryAppliesOnce delivers every batch of both
// sides twice, the second copy reordered across keys, while both sides
// write: every change is settled exactly once, each edit lands once (the
// visit counters), and the two sides end equal.
func TestDuplicateAndReorderedDeliveryAppliesOnce(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sources []*unruly
	p := startPairWith(t, 200, resolve.DeadLetterAll(), func(s duplex.ChangeSource) duplex.ChangeSource {
		mu.Lock()
		defer mu.Unlock()
		u := &unruly{ChangeSource: s, rnd: rand.New(rand.NewPCG(uint64(len(sources)), 7))}
		sources = append(sources, u)
		return u
	})
	// a owns name, b owns email: no conflicts, so every change must land.
	for i := 1; i <= 200; i++ {
		exec(t, p.a.Pool, `UPDATE customers SET name = 'a' || $1::text WHERE id = $1`, i)
		exec(t, p.b.Pool, `UPDATE customers SET email = 'b' || $1::text WHERE id = $1`, i)
		if i%10 == 0 {
			exec(t, p.a.Pool, `UPDATE customers SET visits = visits + 1 WHERE id BETWEEN $1 - 9 AND $1`, i)
		}
	}
	p.waitQuiet(t, 600)
	_, conflicts := p.events.total()
	require.Equal(t, 600, p.events.settled(), "each change settled once (applied, or merged already), although delivered twice")
	require.Zero(t, conflicts)
	// The second copies were recognised as duplicates, not re-decided.
	dups := testutil.ToFloat64(p.events.Collectors("skipped", "a_to_b", "public.customers", "duplicate")) +
		testutil.ToFloat64(p.events.Collectors("skipped", "b_to_a", "public.customers", "duplicate"))
	require.GreaterOrEqual(t, dups, 600.0)
	// A change is in its target's ledger at most once; one merged by the
	// other direction's write-back settles without a ledger row (so one
	// side's ledger may stay empty when the other direction always merges
	// first).
	recorded := 0
	for _, db := range []*testenv.DB{p.a, p.b} {
		var n, dup int
		require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT count(*), count(*) - count(DISTINCT change_id) FROM duplex.applied`).Scan(&n, &dup))
		require.Zero(t, dup, "a change recorded twice")
		recorded += n
	}
	require.Positive(t, recorded)
	for i := 1; i <= 200; i++ {
		var name, email string
		var visits int
		require.NoError(t, p.b.Pool.QueryRow(t.Context(), `SELECT name, email, visits FROM customers WHERE id = $1`, i).Scan(&name, &email, &visits))
		require.Equal(t, fmt.Sprintf("a%d/b%d/1", i, i), fmt.Sprintf("%s/%s/%d", name, email, visits), "row %d holds each edit once", i)
	}
	require.Equal(t, rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool))
	mu.Lock()
	defer mu.Unlock()
	for _, u := range sources {
		u.mu.Lock()
		require.Positive(t, u.deliveries)
		u.mu.Unlock()
	}
}
