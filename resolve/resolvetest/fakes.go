package resolvetest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
)

// clock is a clock that moves only when told; both replicas share it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// deadLetters is a DeadLetterSink recording entries; a redelivered entry
// replaces the earlier one.
type deadLetters struct {
	mu      sync.Mutex
	entries []duplex.DeadLetter
}

func (d *deadLetters) Put(_ context.Context, l *duplex.DeadLetter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.entries {
		if d.entries[i].Change.ID == l.Change.ID && d.entries[i].Direction == l.Direction {
			d.entries[i] = *l
			return nil
		}
	}
	d.entries = append(d.entries, *l)
	return nil
}

func (d *deadLetters) all() []duplex.DeadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.entries)
}

// twiceSource delivers every batch twice when twice is set and counts
// deliveries.
type twiceSource struct {
	next      duplex.ChangeSource
	twice     bool
	delivered int
}

func (s *twiceSource) Stream(ctx context.Context, from duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	return s.next.Stream(ctx, from, func(ctx context.Context, b []duplex.Change) error {
		s.delivered += len(b)
		if err := fn(ctx, slices.Clone(b)); err != nil {
			return err
		}
		if s.twice {
			return fn(ctx, slices.Clone(b))
		}
		return nil
	})
}

func (s *twiceSource) Ack(ctx context.Context, p duplex.Position) error { return s.next.Ack(ctx, p) }
