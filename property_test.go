package duplex_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// chaosApplier fails Apply calls at random: before the write (transient,
// outage, permanent without an index) or after it committed (the outcome is
// then unknown to the Pipeline, which must not apply the change twice).
type chaosApplier struct {
	next    *memdb.Applier
	mu      sync.Mutex
	rnd     *rand.Rand
	rate    float64
	applied map[string]int
}

func (c *chaosApplier) Lookup(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	return c.next.Lookup(ctx, t, keys)
}

func (c *chaosApplier) Applied(ctx context.Context, ids []string) ([]bool, error) {
	return c.next.Applied(ctx, ids)
}

func (c *chaosApplier) Apply(ctx context.Context, b *duplex.Batch) error {
	c.mu.Lock()
	roll, kind := c.rnd.Float64(), c.rnd.IntN(4)
	c.mu.Unlock()
	fail := roll < c.rate
	if fail {
		switch kind {
		case 0:
			return duplex.Transient(errors.New("injected: serialization failure"))
		case 1:
			return duplex.Unavailable(errors.New("injected: connection refused"))
		case 2:
			return errors.New("injected: unknown error")
		}
	}
	if err := c.next.Apply(ctx, b); err != nil {
		return err
	}
	c.mu.Lock()
	for _, w := range b.Writes {
		c.applied[w.Change.ID]++
	}
	c.mu.Unlock()
	if fail { // kind 3: committed, but the Pipeline hears an error
		return duplex.Unavailable(errors.New("injected: connection lost after commit"))
	}
	return nil
}

// TestPropertyEveryChangeAppliedOnceOrDeadLettered runs random edits on a
// source, random delivery (batches delivered twice), random apply failures
// and restarts, and checks that in the end every change was applied at most
// once and the target equals the source for every key without a DLQ entry.
func TestPropertyEveryChangeAppliedOnceOrDeadLettered(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(rt *rapid.T) {
		a, b := newDB(t, "a", false), newDB(t, "b", true)
		dlq := &deadLetters{}
		chaos := &chaosApplier{
			next:    b.Applier("duplex"),
			rnd:     rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 1)),
			rate:    rapid.Float64Range(0, 0.4).Draw(rt, "failure rate"),
			applied: map[string]int{},
		}
		opts := fastOptions()
		opts.BatchSize = rapid.IntRange(1, 16).Draw(rt, "batch size")
		opts.MaxAttempts = 50 // failures are random, not tied to a change: retries must win
		keys := rapid.IntRange(1, 8).Draw(rt, "keys")

		syncOnce := func(twice bool) {
			src := &recordingSource{
				next:  a.Source(memdb.SourceConfig{Slot: "ab", StopWhenIdle: true, BatchSize: opts.BatchSize}),
				twice: twice,
			}
			p, err := duplex.NewPipeline(&duplex.Config{
				Name: "prop", Direction: duplex.Direction{From: "a", To: "b"},
				Source: src, Target: chaos, DeadLetters: dlq,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Options: opts,
			})
			if err != nil {
				rt.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := p.Run(ctx); err != nil {
				rt.Fatalf("run: %v", err)
			}
			if ctx.Err() != nil {
				rt.Fatal("pipeline did not settle in 30s")
			}
		}

		steps := rapid.IntRange(1, 60).Draw(rt, "steps")
		for range steps {
			id := int64(rapid.IntRange(1, keys).Draw(rt, "key"))
			exists := a.Get(customers, key(id)) != nil
			switch op := rapid.IntRange(0, 9).Draw(rt, "op"); {
			case op == 0:
				syncOnce(rapid.Bool().Draw(rt, "deliver twice"))
			case !exists:
				n := int64(rapid.IntRange(-1, 50).Draw(rt, "n")) // -1 breaks b's CHECK: poison
				_ = a.Insert(customers, duplex.Values{"id": id, "name": fmt.Sprint("k", id), "n": n})
			case op <= 2:
				_ = a.Delete(customers, key(id))
			case op <= 6:
				_ = a.Update(customers, key(id), duplex.Values{"n": int64(rapid.IntRange(-1, 50).Draw(rt, "n"))})
			default:
				_ = a.Update(customers, key(id), duplex.Values{"name": rapid.StringMatching(`[a-z]{0,4}`).Draw(rt, "name")})
			}
		}
		syncOnce(rapid.Bool().Draw(rt, "deliver twice at the end"))

		for id, n := range chaos.applied {
			if n > 1 {
				rt.Fatalf("change %s applied %d times", id, n)
			}
		}
		deadKeys := map[string]bool{}
		for _, e := range dlq.all() {
			deadKeys[e.Change.Key.String()] = true
		}
		ra, rb := a.Rows(customers), b.Rows(customers)
		for k, row := range ra {
			if deadKeys[k] {
				continue
			}
			other := rb[k]
			if other == nil {
				rt.Fatalf("key %s missing on the target and not in the DLQ", k)
			}
			for f, v := range row {
				if !duplex.Equal(v, other[f]) {
					rt.Fatalf("key %s field %s: source %v, target %v, not in the DLQ", k, f, v, other[f])
				}
			}
		}
		for k := range rb {
			if ra[k] == nil && !deadKeys[k] {
				rt.Fatalf("key %s deleted on the source but still on the target, not in the DLQ", k)
			}
		}
	})
}
