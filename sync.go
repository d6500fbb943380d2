// Sync: the wiring of a two-way sync, two Pipelines sharing key locks and agreement records.

package duplex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Endpoint is one of the two systems of a two-way sync.
type Endpoint struct {
	// Name names the system ("a", "crm"); it labels directions, logs and
	// metrics. Required, and different from the other endpoint's.
	Name string
	// Source captures this system's changes.
	Source ChangeSource
	// Applier reads and writes this system.
	Applier Applier
	// Deduper remembers the change IDs applied to this system. nil: an
	// in-process memory (see Config.Deduper).
	Deduper Deduper
	// LoopGuard drops, from this system's Source, the writes the sync made.
	// nil: none (the source may filter by replication origin itself).
	LoopGuard LoopGuard
	// Agreements keeps this system's agreement records when its Applier is
	// not an AgreementKeeper (apply/applypg and memdb are: they write the
	// records in the transaction of the writes they describe, which is
	// what makes a merge crash-safe). nil: a MemoryAgreements of 65,536
	// keys, forgotten on restart. Set only for an Applier that keeps none.
	Agreements AgreementStore
}

// SyncConfig configures a two-way Sync.
type SyncConfig struct {
	// Name identifies the sync. Required.
	Name string
	// A and B are the two systems.
	A, B Endpoint
	// Resolver decides fields for both directions; it must be deterministic
	// (the same conflict seen either way resolves the same). nil: conflicts
	// are dead-lettered.
	Resolver Resolver
	// DeadLetters receives what cannot be applied, from both directions.
	// Required.
	DeadLetters DeadLetterSink
	// Observer receives events from both directions. nil: NopObserver.
	Observer Observer
	// Logger receives logs. nil: slog.Default().
	Logger *slog.Logger
	// Preflight, when set, inspects both systems: Sync.Check runs it
	// without changing anything, and Run runs it first, with its fixes,
	// and does not start when it finds a blocker (*PreflightError). nil:
	// no checks.
	Preflight Preflight
	// Onboarding configures what Run does on the first start of the sync's
	// name, before streaming: bring together the rows both systems already
	// hold (see Sync.Onboard). It runs by default when both Appliers can
	// (apply/applypg's) and Onboarding.Tables names tables.
	Onboarding OnboardingConfig
	// Options tunes both Pipelines.
	Options
}

// Sync runs the A->B and B->A Pipelines of a two-way sync together.
type Sync struct {
	ab, ba *Pipeline
	cfg    SyncConfig

	reportMu sync.Mutex
	report   *Report // the preflight's at start

	onboarding atomic.Bool // an Onboard runs (ErrOnboarding)
}

// NewSync checks cfg and builds both Pipelines.
func NewSync(cfg *SyncConfig) (*Sync, error) {
	var errs []error
	if cfg.A.Name == "" || cfg.B.Name == "" {
		errs = append(errs, &ConfigError{"A.Name/B.Name", "both endpoints need a name"})
	}
	a, b := cfg.A, cfg.B
	for _, e := range []*Endpoint{&a, &b} {
		if _, keeps := e.Applier.(AgreementKeeper); keeps && e.Agreements != nil {
			errs = append(errs, &ConfigError{e.Name + ".Agreements", "the Applier keeps the agreement records in its own transactions; an AgreementStore would bypass them"})
		}
		if _, keeps := e.Applier.(AgreementKeeper); !keeps && e.Agreements == nil {
			e.Agreements = NewMemoryAgreements(1 << 16)
		}
	}
	mk := func(from, to Endpoint) (*Pipeline, error) {
		return NewPipeline(&Config{
			Name:           cfg.Name,
			Direction:      Direction{From: from.Name, To: to.Name},
			Source:         from.Source,
			Target:         to.Applier,
			Peer:           from.Applier,
			Agreements:     to.Agreements,
			PeerAgreements: from.Agreements,
			Resolver:       cfg.Resolver,
			Deduper:        to.Deduper,
			LoopGuard:      from.LoopGuard,
			DeadLetters:    cfg.DeadLetters,
			Observer:       cfg.Observer,
			Logger:         cfg.Logger,
			Options:        cfg.Options,
		})
	}
	ab, err := mk(a, b)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s -> %s: %w", cfg.A.Name, cfg.B.Name, err))
	}
	ba, err := mk(b, a)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s -> %s: %w", cfg.B.Name, cfg.A.Name, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	locks := newKeyLocks()
	ab.locks, ba.locks = locks, locks
	c := *cfg
	c.A, c.B = a, b
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &Sync{ab: ab, ba: ba, cfg: c}, nil
}

// Pipelines returns the A->B and B->A Pipelines.
func (s *Sync) Pipelines() (ab, ba *Pipeline) { return s.ab, s.ba }

// Run runs the Preflight, when configured (a *PreflightError when it finds
// a blocker), then both directions until ctx is canceled (nil) or one of
// them fails, which stops the other; it returns the failures joined. On the
// first start of the sync's name (and after a start stopped while
// onboarding) it onboards, after the preflight and before streaming, the
// rows both systems hold (Sync.Onboard), unless
// SyncConfig.Onboarding.Disabled.
func (s *Sync) Run(ctx context.Context) error {
	if err := s.preflight(ctx); err != nil {
		return err
	}
	if err := s.onboardAtStart(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(errStopped)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, p := range []*Pipeline{s.ab, s.ba} {
		wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				errs[i] = err
				cancel(err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
