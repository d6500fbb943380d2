package duplex_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/duplexsync/duplex"
)

// benchSource delivers n update changes over a few keys in batches, as fast
// as the Pipeline takes them.
type benchSource struct {
	n, batch int
	keys     []duplex.Key
	before   []duplex.Values
	after    []duplex.Values
}

func newBenchSource(n, batch, keys int) *benchSource {
	s := &benchSource{n: n, batch: batch}
	for i := range keys {
		s.keys = append(s.keys, key(int64(i)))
		s.before = append(s.before, duplex.Values{"id": int64(i), "name": "old", "n": int64(i), "note": nil})
		s.after = append(s.after, duplex.Values{"id": int64(i), "name": "new", "n": int64(i), "note": nil})
	}
	return s
}

func (s *benchSource) Stream(ctx context.Context, _ duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	at := time.Now()
	for sent := 0; sent < s.n; {
		b := make([]duplex.Change, min(s.batch, s.n-sent))
		for i := range b {
			k := (sent + i) % len(s.keys)
			id := strconv.Itoa(sent + i)
			b[i] = duplex.Change{
				ID: id, Source: "a", Table: customers, Key: s.keys[k], Op: duplex.OpUpdate,
				Before: s.before[k], After: s.after[k], CommitTime: at, Position: duplex.Position(id),
			}
		}
		sent += len(b)
		if err := fn(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (s *benchSource) Ack(context.Context, duplex.Position) error { return nil }

// benchTarget answers every lookup with the before image and accepts every write.
type benchTarget struct{ rows []duplex.Values }

func (t *benchTarget) Lookup(_ context.Context, _ duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	out := make([]duplex.Values, len(keys))
	for i, k := range keys {
		out[i] = t.rows[k[0].Value.(int64)]
	}
	return out, nil
}

func (t *benchTarget) Apply(context.Context, *duplex.Batch) error { return nil }

type nopDedup struct{}

func (nopDedup) Seen(_ context.Context, ids []string) ([]bool, error) {
	return make([]bool, len(ids)), nil
}
func (nopDedup) Mark(context.Context, []string) error { return nil }

// BenchmarkPipeline measures the Pipeline's own cost per change: in-memory
// source and target, updates with before images over 10,000 keys, batches
// of 512. Run with -cpu 1 for the one-core figure.
func BenchmarkPipeline(b *testing.B) {
	for _, bc := range []struct {
		name  string
		dedup duplex.Deduper
	}{{"default-dedup", nil}, {"no-dedup", nopDedup{}}} {
		b.Run(bc.name, func(b *testing.B) {
			const keys = 10_000
			src := newBenchSource(b.N, 512, keys)
			p, err := duplex.NewPipeline(&duplex.Config{
				Name: "bench", Direction: duplex.Direction{From: "a", To: "b"},
				Source: src, Target: &benchTarget{rows: src.before}, Deduper: bc.dedup,
				DeadLetters: &deadLetters{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			if err := p.Run(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "changes/s")
		})
	}
}
