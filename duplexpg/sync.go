package duplexpg

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/metrics"
)

// Sync is a two-way sync between two PostgreSQL databases, built by
// NewSync: the duplex.Sync (its methods are Sync's) with the sync's
// lock, dead-letter queue and metrics.
type Sync struct {
	*duplex.Sync
	*built
	ready chan struct{}
}

// NewSync checks a and b against each other and cfg (tables and their
// keys, the resolvers, the preflight; nothing is created when a check
// fails), then takes the sync's lock on both databases, which refuses a
// second instance of the sync (*LockHeldError), and creates what is
// missing: the appliers' state and replication origins, the replication
// slots and publications (a slot dropped or invalidated after the sync
// started is an error, unless cfg.RecreateSlots), and the dead-letter
// queue, in a's database. It registers the metrics on cfg.Registerer.
// A preflight blocker is a *duplex.PreflightError. The endpoints keep
// what was created; Close releases it.
func NewSync(ctx context.Context, a, b *Endpoint, cfg Config) (*Sync, error) {
	p, err := checkPair(ctx, a, b, cfg, a, b)
	if err != nil {
		return nil, err
	}
	cfg = p.cfg
	checker, err := p.checker()
	if err != nil {
		return nil, err
	}
	// The preflight, before anything is created: blockers refuse the
	// start. The Sync runs it again at start, making the fixes asked for.
	if r, err := checker.Check(ctx, duplex.CheckParams{}); err != nil {
		return nil, err
	} else if r.Count(duplex.Blocker) > 0 {
		return nil, &duplex.PreflightError{Report: r}
	}
	p.directions = []string{
		duplex.Direction{From: a.cfg.System, To: b.cfg.System}.String(),
		duplex.Direction{From: b.cfg.System, To: a.cfg.System}.String(),
	}
	if err := p.create(ctx, p.ends[:], p.ends[:], a); err != nil {
		return nil, err
	}
	pair, err := duplex.NewSync(&duplex.SyncConfig{
		Name: a.cfg.Sync, A: a.endpoint, B: b.endpoint, Preflight: checker,
		Resolver: p.resolver, DeadLetters: p.dead, Observer: p.metrics, Logger: cfg.Logger,
		Onboarding: duplex.OnboardingConfig{Disabled: cfg.SkipOnboarding, Tables: cfg.Tables, ChunkSize: cfg.OnboardingChunk,
			Progress: func(pr duplex.OnboardingProgress) {
				p.onboarding.Progress(pr)
				if cfg.OnboardingProgress != nil {
					cfg.OnboardingProgress(pr)
				}
			}},
		Options: cfg.Options,
	})
	if err == nil {
		err = p.register(p.metrics, metrics.NewPreflight(pair.Report), p.onboarding)
	}
	if err != nil {
		return nil, errors.Join(err, p.release())
	}
	return &Sync{Sync: pair, built: p, ready: make(chan struct{})}, nil
}

// Run runs the sync (duplex.Sync.Run: preflight, onboarding on the first
// start, then both directions) until ctx is canceled (nil) or it fails.
// Meanwhile it holds the sync's lock on both databases (taking it again
// after a lost session) and stops with an error wrapping ErrLockLost and
// a *LockHeldError when another instance took it, and warns every minute
// about a slot retaining more than Config.MaxRetainedWAL.
func (s *Sync) Run(ctx context.Context) error {
	ab, ba := s.Pipelines()
	return s.run(ctx, s.Sync.Run, s.ready, ab, ba)
}

// Ready is closed once both directions stream (every change committed from
// then on is captured).
func (s *Sync) Ready() <-chan struct{} { return s.ready }

// Close unregisters the metrics and releases what NewSync built (the
// locks and the change sources); the endpoints keep their connections
// until their own Close. Call it after Run returned.
func (s *Sync) Close() error { return s.release() }

// run runs fn under the sync's lock: see Sync.Run.
func (p *built) run(ctx context.Context, fn func(context.Context) error, ready chan struct{}, pipelines ...*duplex.Pipeline) error {
	if p.cfg.ReconcileOnly {
		return errors.New("duplexpg: built with Config.ReconcileOnly: it does not run")
	}
	runCtx, stop := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop(nil)
		wg.Wait()
	}()
	for _, e := range p.ends {
		wg.Go(func() {
			if err := e.lock.hold(runCtx, p.cfg.LockCheck, p.cfg.Logger); err != nil {
				stop(err)
			}
		})
	}
	if p.cfg.MaxRetainedWAL > 0 && len(p.slots) > 0 {
		wg.Go(func() { watchRetained(runCtx, p.slots, p.cfg.MaxRetainedWAL, p.cfg.Logger) })
	}
	wg.Go(func() {
		for _, pl := range pipelines {
			select {
			case <-pl.Ready():
			case <-runCtx.Done():
				return
			}
		}
		close(ready)
	})
	err := fn(runCtx)
	if cause := context.Cause(runCtx); errors.Is(cause, ErrLockLost) {
		return cause
	}
	return err
}

// Health returns the /healthz handler (metrics.Health): unhealthy past
// maxLag in a direction or a slot retaining more than
// Config.MaxRetainedWAL, naming a database outage a direction waits out,
// and showing an onboarding in progress.
func (p *built) Health(maxLag time.Duration) http.Handler {
	return metrics.Health(metrics.HealthConfig{
		Directions: p.directions, MaxLag: maxLag, Lag: p.metrics.Lag, Waiting: p.metrics.Waiting, Depth: p.depth,
		MaxRetainedWAL: p.cfg.MaxRetainedWAL, Slots: p.slots, Onboarding: p.onboarding.Lines,
	})
}

// Check runs the preflight of a sync between a and b (package
// check/checkpg, as NewSync and Sync.Run do) without changing anything,
// and returns its report. It takes no lock: it may run beside the sync.
func Check(ctx context.Context, a, b *Endpoint, cfg Config) (*duplex.Report, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := differentDatabases(ctx, a, b); err != nil {
		return nil, err
	}
	p := &built{cfg: c, ends: [2]*Endpoint{a, b}}
	checker, err := p.checker()
	if err != nil {
		return nil, err
	}
	return checker.Check(ctx, duplex.CheckParams{})
}
