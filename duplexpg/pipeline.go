package duplexpg

import (
	"context"
	"errors"

	"github.com/duplexsync/duplex"
)

// Pipeline is a one-way sync from one PostgreSQL database to another,
// built by NewPipeline: the duplex.Pipeline (its methods are Pipeline's)
// with the sync's lock, dead-letter queue and metrics.
type Pipeline struct {
	*duplex.Pipeline
	*built
	ready chan struct{}
}

// NewPipeline checks from and to against each other and cfg, takes the
// sync's lock on both databases and creates what is missing, as NewSync
// does, for a one-way sync: changes captured on from are applied to to
// (decided by the resolvers against to's rows). The dead-letter queue
// lives in to's database. Config's onboarding and preflight settings do
// not apply.
func NewPipeline(ctx context.Context, from, to *Endpoint, cfg Config) (*Pipeline, error) {
	p, err := checkPair(ctx, from, to, cfg, from)
	if err != nil {
		return nil, err
	}
	cfg = p.cfg
	dir := duplex.Direction{From: from.cfg.System, To: to.cfg.System}
	p.directions = []string{dir.String()}
	if err := p.create(ctx, []*Endpoint{to}, []*Endpoint{from}, to); err != nil {
		return nil, err
	}
	pl, err := duplex.NewPipeline(&duplex.Config{
		Name: from.cfg.Sync, Direction: dir, Source: from.endpoint.Source, Target: to.endpoint.Applier,
		Deduper: to.endpoint.Deduper, LoopGuard: from.endpoint.LoopGuard, Resolver: p.resolver,
		DeadLetters: p.dead, Observer: p.metrics, Logger: cfg.Logger, Options: cfg.Options,
	})
	if err == nil {
		err = p.register(p.metrics)
	}
	if err != nil {
		return nil, errors.Join(err, p.release())
	}
	return &Pipeline{Pipeline: pl, built: p, ready: make(chan struct{})}, nil
}

// Run runs the Pipeline until ctx is canceled (nil) or it fails, holding
// the sync's lock as Sync.Run does.
func (p *Pipeline) Run(ctx context.Context) error {
	return p.run(ctx, p.Pipeline.Run, p.ready, p.Pipeline)
}

// Ready is closed once the Pipeline streams.
func (p *Pipeline) Ready() <-chan struct{} { return p.ready }

// Close unregisters the metrics and releases what NewPipeline built; the
// endpoints keep their connections until their own Close.
func (p *Pipeline) Close() error { return p.release() }
