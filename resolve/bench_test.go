package resolve_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/resolve"
)

// conflictSource delivers n update changes, each in conflict with the row
// conflictTarget reports: name (owned by the source), email (shared, the
// source's updated_at is newer) and updated_at all differ.
type conflictSource struct{ n, batch int }

func (s conflictSource) Stream(ctx context.Context, _ duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	before := duplex.Values{"id": int64(0), "name": "old", "email": "old@example.com", "updated_at": epoch}
	after := duplex.Values{"id": int64(0), "name": "new", "email": "new@example.com", "updated_at": epoch.Add(time.Hour)}
	for sent := 0; sent < s.n; {
		b := make([]duplex.Change, min(s.batch, s.n-sent))
		for i := range b {
			id := strconv.Itoa(sent + i)
			b[i] = duplex.Change{
				ID: id, Source: "a", Table: customers, Key: duplex.Key{{Name: "id", Value: int64((sent + i) % 64)}},
				Op: duplex.OpUpdate, Before: before, After: after, CommitTime: epoch, Position: duplex.Position(id),
			}
		}
		sent += len(b)
		if err := fn(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (conflictSource) Ack(context.Context, duplex.Position) error { return nil }

// conflictTarget reports, for every key, a row b changed too, and accepts
// every write.
type conflictTarget struct{}

func (conflictTarget) Lookup(_ context.Context, _ duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	out := make([]duplex.Values, len(keys))
	for i, k := range keys {
		out[i] = duplex.Values{"id": k[0].Value, "name": "b's", "email": "b@example.com", "updated_at": epoch.Add(time.Minute)}
	}
	return out, nil
}

func (conflictTarget) Apply(context.Context, *duplex.Batch) error { return nil }

// BenchmarkChain measures a Pipeline deciding update-update conflicts on
// three fields, per conflict: with Authority then LWW, and with a resolver
// that takes every field (the Pipeline's own cost, for comparison).
func BenchmarkChain(b *testing.B) {
	auth, err := resolve.ParseAuthority("customers.name=a,customers.email=both,updated_at=both")
	if err != nil {
		b.Fatal(err)
	}
	lww := &resolve.LWW{Column: "updated_at", Skew: time.Second, Now: farFuture}
	takeAll := duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
		for _, f := range c.Undecided() {
			c.Take(f, "bench")
		}
		return nil
	})
	for _, bc := range []struct {
		name string
		r    duplex.Resolver
	}{
		{"authority+lww", duplex.Chain(auth, lww)},
		{"take_all", takeAll},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p, err := duplex.NewPipeline(&duplex.Config{
				Name: "bench", Direction: duplex.Direction{From: "a", To: "b"},
				Source: conflictSource{n: b.N, batch: 256}, Target: conflictTarget{}, Resolver: bc.r,
				DeadLetters: dlq.NewMemory(dlq.MemoryConfig{}), Logger: discard, Options: duplex.Options{BatchSize: 256},
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			if err := p.Run(context.Background()); err != nil {
				b.Fatal(err)
			}
		})
	}
}
