package pgpoll_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// consumer runs Stream like the Pipeline does: it keeps what it received
// and acknowledges every batch once it has it.
type consumer struct {
	t      *testing.T
	src    duplex.ChangeSource
	ack    bool
	cancel context.CancelFunc
	done   chan error

	mu      sync.Mutex
	changes []duplex.Change
	batches []int
	last    map[string]duplex.Change // by key
	maxTS   time.Time
}

func consume(t *testing.T, src duplex.ChangeSource, from duplex.Position, ack bool) *consumer {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	c := &consumer{t: t, src: src, ack: ack, cancel: cancel, done: make(chan error, 1), last: map[string]duplex.Change{}}
	go func() {
		c.done <- src.Stream(ctx, from, func(ctx context.Context, b []duplex.Change) error {
			c.mu.Lock()
			c.batches = append(c.batches, len(b))
			for _, ch := range b {
				c.changes = append(c.changes, ch)
				c.last[ch.Key.String()] = ch
				if ch.CommitTime.After(c.maxTS) && ch.Op != duplex.OpDelete {
					c.maxTS = ch.CommitTime
				}
			}
			c.mu.Unlock()
			if c.ack {
				return src.Ack(ctx, b[len(b)-1].Position)
			}
			return nil
		})
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

// stop stops the stream and checks that it returned nil.
func (c *consumer) stop() []duplex.Change {
	c.t.Helper()
	if c.cancel == nil {
		return c.snapshot()
	}
	c.cancel()
	c.cancel = nil
	select {
	case err := <-c.done:
		require.NoError(c.t, err)
	case <-time.After(10 * time.Second):
		c.t.Fatal("Stream did not return after cancel")
	}
	return c.snapshot()
}

func (c *consumer) snapshot() []duplex.Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]duplex.Change(nil), c.changes...)
}

func (c *consumer) maxSeen() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxTS
}

// waitUntil polls cond over the changes received until it holds.
func (c *consumer) waitUntil(what string, cond func(got []duplex.Change) bool) []duplex.Change {
	c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		c.mu.Lock()
		ok := cond(c.changes)
		c.mu.Unlock()
		if ok {
			return c.snapshot()
		}
		select {
		case err := <-c.done:
			c.t.Fatalf("Stream returned %v while waiting for %s", err, what)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s; got %d changes", what, len(c.snapshot()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor waits for at least n changes.
func (c *consumer) waitFor(n int) []duplex.Change {
	c.t.Helper()
	return c.waitUntil(fmt.Sprintf("%d changes", n), func(got []duplex.Change) bool { return len(got) >= n })
}
