// Package crashpoint stops a sync dead at one Apply, for the crash-point
// tests: a Crasher counts the Apply calls of the Appliers it wraps and, at
// the chosen call, kills the run before that call commits or right after,
// after which nothing of the "dead process" writes any more.
package crashpoint

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/duplexsync/duplex"
)

// ErrCrashed is what Apply returns from the crash on (as duplex.Unavailable).
var ErrCrashed = errors.New("crash point: the process is dead")

// Applier is what a Crasher wraps: an Applier with the state a sync keeps
// in it (memdb's and applypg's).
type Applier interface {
	duplex.Applier
	duplex.Ledger
	duplex.Checkpointer
	duplex.AgreementKeeper
}

// Crasher counts the Apply calls of the Appliers it wraps. It is disarmed
// until Arm. It is safe for concurrent use.
type Crasher struct {
	mu    sync.Mutex
	calls int
	at    int // the call that crashes; <= 0: none
	after bool
	dead  chan struct{}
	stop  func()
}

// New returns a disarmed Crasher.
func New() *Crasher { return &Crasher{dead: make(chan struct{})} }

// Arm makes the at-th Apply from now (counted across all wrapped Appliers)
// the crash: stop is called (it cancels the run), the call commits first
// when after is set, and it and every later Apply fail with ErrCrashed.
func (c *Crasher) Arm(at int, after bool, stop func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls, c.at, c.after, c.stop = 0, at, after, stop
	c.dead = make(chan struct{})
}

// Disarm brings the dead back to life without a crash to come: for the
// restart.
func (c *Crasher) Disarm() { c.Arm(0, false, nil) }

// Dead is closed when the crash happened.
func (c *Crasher) Dead() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

// Calls returns the Apply calls counted since Arm.
func (c *Crasher) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// Wrap returns a, its Apply calls counted by c.
func (c *Crasher) Wrap(a Applier) Applier { return applier{a, c} }

type applier struct {
	Applier
	c *Crasher
}

func (a applier) Apply(ctx context.Context, b *duplex.Batch) error {
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.dead:
		return duplex.Unavailable(ErrCrashed)
	default:
	}
	c.calls++
	if c.calls != c.at {
		return a.Applier.Apply(ctx, b)
	}
	close(c.dead)
	if c.stop != nil {
		c.stop()
	}
	if c.after {
		if err := a.Applier.Apply(ctx, b); err != nil {
			return err
		}
	}
	return duplex.Unavailable(ErrCrashed)
}

// NewKey passes duplex.KeyAllocator on to the wrapped Applier, so a
// wrapped Applier offers keep-both as the Applier does.
func (a applier) NewKey(ctx context.Context, t duplex.Table, old duplex.Key) (duplex.Key, error) {
	ka, ok := a.Applier.(duplex.KeyAllocator)
	if !ok {
		return nil, fmt.Errorf("%w: %T draws no keys", duplex.ErrNotOffered, a.Applier)
	}
	return ka.NewKey(ctx, t, old)
}
