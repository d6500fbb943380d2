// Stage map: the Pipeline's wiring. Config, NewPipeline, and Run, which streams the
// source's batches to the one worker (work) that owns all mutable state. A change
// flows intake.go -> plan.go (one-way) or merge.go (two-way) -> decide.go ->
// apply.go -> settle.go; retry.go parks what fails; replay.go and actions.go are the
// operator's way in. See docs/architecture.md.

package duplex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/duplexsync/duplex/internal/backoff"
)

// Options tunes a Pipeline. Zero values mean the documented defaults.
type Options struct {
	// BatchSize is the most changes applied in one Apply call. 0: 512.
	BatchSize int
	// MaxAttempts is how often a change failing with an unclassified error
	// is tried before it is dead-lettered (transient and unavailable errors
	// are retried for as long as they last). 0: 5.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential backoff (with jitter)
	// between retries. 0: 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// MaxParked is how many changes may wait behind failing keys before the
	// Pipeline stops taking new changes from the source. 0: 10,000.
	MaxParked int
	// QueueDepth is how many source batches may wait for the applier. 0: 4.
	QueueDepth int
	// ShutdownTimeout bounds the time an in-flight apply, dead-lettering and
	// the last acknowledgement may take after ctx is canceled. 0: 10s.
	ShutdownTimeout time.Duration
	// PropagateTruncate applies a source's TRUNCATE to the target when the
	// Applier is a Truncater. false (the default): a TRUNCATE is dead-lettered
	// with ReasonTruncate for an operator to decide, never propagated.
	PropagateTruncate bool
	// Now is the clock, for tests. nil: time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.BatchSize <= 0 {
		o.BatchSize = 512
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.MaxParked <= 0 {
		o.MaxParked = 10_000
	}
	if o.QueueDepth <= 0 {
		o.QueueDepth = 4
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

func (o *Options) validate() []error {
	var errs []error
	if o.BatchSize < 0 {
		errs = append(errs, &ConfigError{"BatchSize", "must not be negative"})
	}
	if o.MaxAttempts < 0 {
		errs = append(errs, &ConfigError{"MaxAttempts", "must not be negative"})
	}
	if o.MinBackoff < 0 || o.MaxBackoff < 0 {
		errs = append(errs, &ConfigError{"MinBackoff/MaxBackoff", "must not be negative"})
	}
	return errs
}

// Config configures a one-way Pipeline. Use Sync for both directions.
type Config struct {
	// Name identifies the sync in dead letters, logs and metrics. Required.
	Name string
	// Direction names the systems: From is the source's, To the target's.
	// Required.
	Direction Direction
	// Source captures changes on the From system. Required.
	Source ChangeSource
	// Target reads and writes the To system. Required.
	Target Applier
	// Peer reads and writes the From system, for two-way syncs (NewSync
	// sets it). With Peer, the Pipeline merges instead of deciding each
	// change against the target alone: for every key a chunk touches it
	// reads both systems' rows and the agreed row (Agreements), merges them
	// field by field through the resolvers, and writes the result to the
	// target and, where the source lacks part of it, back to the source.
	// Both directions then decide a row the same way whatever the order in
	// which crossing changes arrive. nil: one-way.
	Peer Applier
	// Agreements and PeerAgreements keep the agreement records of Target
	// and Peer in a two-way sync, when those are not AgreementKeepers
	// (which keep them in their own transactions). nil: a
	// MemoryAgreements of 65,536 keys. Both directions of a Sync must
	// share them (NewSync does).
	Agreements, PeerAgreements AgreementStore
	// Resolver decides fields (see Conflict). nil: changes only the source
	// made are applied, and every conflict is dead-lettered.
	Resolver Resolver
	// Deduper remembers settled change IDs on the target. nil: an in-process
	// memory of the last 65,536 IDs.
	Deduper Deduper
	// LoopGuard drops the sync's own writes coming back. nil: none (the
	// source may filter them itself, as logical replication does by origin).
	LoopGuard LoopGuard
	// DeadLetters receives what cannot be applied. Required.
	DeadLetters DeadLetterSink
	// Observer receives events for metrics. nil: NopObserver.
	Observer Observer
	// Logger receives logs. nil: slog.Default().
	Logger *slog.Logger
	// Options tunes batching, retries and shutdown.
	Options
}

// Pipeline moves changes one way: source -> loop guard -> dedup -> conflict
// detection and resolution against the target's current row -> batched apply
// -> settle -> acknowledge.
//
// It keeps the order of changes per key, applies in batches, retries
// transient failures with exponential backoff while changes to other keys go
// on, isolates a failing change by splitting its batch and dead-letters only
// that one, and acknowledges a position to the source only when every change
// up to it is settled.
type Pipeline struct {
	cfg     Config
	dir     Direction
	log     *slog.Logger
	obs     Observer
	dedup   Deduper
	ledger  Ledger // the target's record of applied change IDs, if it keeps one
	retry   backoff.Policy
	started atomic.Bool
	ready   chan struct{}
	replays chan *replayReq // operator retries, served by the worker
	stopped chan struct{}   // closed when the worker has returned

	// worker state, owned by the worker goroutine
	ctx       context.Context // canceled when the Pipeline must stop
	opCtx     context.Context // outlives ctx by ShutdownTimeout, for in-flight work
	seq       uint64
	lastPos   Position
	flight    *flight // the chunk committing beside the worker (ahead.go)
	acked     Position
	ackFailed bool
	parked    map[string]*park
	parkedN   int
	parkedIDs map[string]struct{}
	conflict  Conflict
	drifted   map[string]bool
	locks     *keyLocks // shared with the other direction of a Sync

	checkpointAt time.Time // two-way: when recordSettled last stored a checkpoint

	target  records // the target with its agreement records
	planner planner // one-way or merge, chosen by NewPipeline

	dedupFailures  int
	dedupDownUntil time.Time
}

type item struct {
	c        *Change
	seq      uint64
	prev     Position // position of the change delivered just before this one
	key      string
	attempts int
	// replay marks an operator's retry of a dead-lettered change: it never
	// moves checkpoints or acknowledgements, and it is never parked.
	replay bool
	// out and resolution record how the change settled; deadText is the
	// reason given when it was dead-lettered.
	out        outcome
	resolution resolution
	deadText   string
}

type park struct {
	head  *item
	queue []*item
	next  time.Time
}

// errAborted stops the worker without settling the current work.
var errAborted = errors.New("duplex: aborted")

// NewPipeline checks cfg and returns a Pipeline. The error joins every
// problem found, each naming the field.
func NewPipeline(cfg *Config) (*Pipeline, error) {
	c := *cfg
	var errs []error
	if c.Name == "" {
		errs = append(errs, &ConfigError{"Name", "is required"})
	}
	if c.Direction.From == "" || c.Direction.To == "" {
		errs = append(errs, &ConfigError{"Direction", "needs From and To system names"})
	} else if c.Direction.From == c.Direction.To {
		errs = append(errs, &ConfigError{"Direction", fmt.Sprintf("From and To are both %q", c.Direction.From)})
	}
	if c.Source == nil {
		errs = append(errs, &ConfigError{"Source", "is required"})
	}
	if c.Target == nil {
		errs = append(errs, &ConfigError{"Target", "is required"})
	}
	if c.DeadLetters == nil {
		errs = append(errs, &ConfigError{"DeadLetters", "is required"})
	}
	errs = append(errs, c.Options.validate()...)
	errs = append(errs, checkNames(&c)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.Options.setDefaults()
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	p := &Pipeline{
		cfg:       c,
		dir:       c.Direction,
		obs:       c.Observer,
		dedup:     c.Deduper,
		retry:     backoff.Policy{Min: c.MinBackoff, Max: c.MaxBackoff},
		ready:     make(chan struct{}),
		replays:   make(chan *replayReq),
		stopped:   make(chan struct{}),
		parked:    make(map[string]*park),
		parkedIDs: make(map[string]struct{}),
	}
	p.log = c.Logger.With("component", "pipeline", "sync", c.Name, "direction", c.Direction.String())
	if p.dedup == nil {
		p.dedup = newRecentIDs(1 << 16)
	}
	p.ledger, _ = c.Target.(Ledger)
	p.target = recordsOf(c.Target, c.Agreements)
	p.planner = oneWayPlanner{p}
	if c.Peer != nil {
		p.planner = &mergePlanner{Pipeline: p, source: recordsOf(c.Peer, c.PeerAgreements)}
	}
	return p, nil
}

// Ready is closed once Run has started streaming.
func (p *Pipeline) Ready() <-chan struct{} { return p.ready }

// Direction returns the direction the Pipeline moves changes in.
func (p *Pipeline) Direction() Direction { return p.dir }

// Run moves changes until ctx is canceled (it finishes the apply in flight,
// acknowledges what is settled and returns nil), the source's Stream returns
// (it settles everything delivered, then returns nil), or an unrecoverable
// error occurs (it returns it). Nothing is left half-done: unacknowledged
// changes are delivered again by the next Run. Run may be called only once.
func (p *Pipeline) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(errStopped)

	opCtx, opCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer opCancel()
	stopTimer := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(p.cfg.ShutdownTimeout, opCancel)
		context.AfterFunc(opCtx, func() { t.Stop() })
	})
	defer stopTimer()
	p.ctx, p.opCtx = ctx, opCtx

	from, stopped, err := p.resumePosition(ctx)
	if err != nil || stopped {
		return err // stopped while starting: nothing was delivered
	}
	p.log.InfoContext(ctx, "pipeline starting", "from", string(from))

	in := make(chan []Change, p.cfg.QueueDepth)
	srcDone := make(chan error, 1)
	go func() { srcDone <- p.receive(ctx, cancel, from, in) }()
	close(p.ready)

	werr := p.work(in)
	close(p.stopped)
	if werr != nil && !errors.Is(werr, errAborted) {
		cancel(werr) // unblock the source if the worker stopped first
	} else {
		werr = nil
	}
	go func() {
		for range in { //nolint:revive // drain so a blocked fn returns
		}
	}()
	serr := <-srcDone
	if werr == nil {
		if cause := context.Cause(ctx); serr == nil && cause != nil && !errors.Is(cause, errStopped) &&
			!errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
			serr = cause
		}
	}
	err = errors.Join(werr, serr)
	if err != nil {
		p.log.ErrorContext(opCtx, "pipeline stopped", slog.Any("err", err))
	} else {
		p.log.InfoContext(opCtx, "pipeline stopped", "acked", string(p.acked))
	}
	return err
}

// resumePosition returns the position to stream from: the target's
// checkpoint when it is a Checkpointer, else the start. stopped means the
// read failed because ctx ended.
func (p *Pipeline) resumePosition(ctx context.Context) (from Position, stopped bool, err error) {
	cp, ok := p.cfg.Target.(Checkpointer)
	if !ok {
		return "", false, nil
	}
	pos, err := cp.Checkpoint(ctx, p.dir.From)
	if err != nil && ctx.Err() != nil {
		return "", true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("duplex: %s: read checkpoint: %w", p.dir, err)
	}
	return pos, false, nil
}

// receive streams the source's batches from from into in until the source
// returns or ctx ends, then closes in. A source failure cancels ctx with
// it and is returned; a stop is not an error.
func (p *Pipeline) receive(ctx context.Context, cancel context.CancelCauseFunc, from Position, in chan<- []Change) error {
	err := p.cfg.Source.Stream(ctx, from, func(ctx context.Context, batch []Change) error {
		if len(batch) == 0 {
			return nil
		}
		select {
		case in <- batch:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	close(in)
	if err != nil && ctx.Err() == nil {
		err = fmt.Errorf("duplex: %s: source: %w", p.dir, err)
		cancel(err)
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// work is the single worker goroutine: it owns all mutable state.
func (p *Pipeline) work(in <-chan []Change) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer p.abandon()
	for {
		if p.ctx.Err() != nil {
			break
		}
		if in == nil && len(p.parked) == 0 && p.flight == nil {
			break // source finished and everything is settled
		}
		recv := in
		if p.parkedN >= p.cfg.MaxParked {
			recv = nil // back-pressure: let the retries drain first
		}
		wait := time.Hour
		if next, ok := p.nextRetry(); ok {
			wait = max(next.Sub(p.cfg.Now()), 0)
		}
		if p.ackFailed && wait > time.Second {
			wait = time.Second
		}
		timer.Reset(wait)
		var err error
		select {
		case batch, ok := <-recv:
			if !ok {
				in = nil
				break
			}
			var open bool
			if batch, open = p.coalesce(batch, in); !open {
				in = nil
			}
			err = p.intake(batch)
		case ferr := <-p.flightDone():
			p.flight.received(ferr)
			err = p.land()
		case <-timer.C:
			if err = p.land(); err == nil {
				err = p.retryDue()
			}
		case req := <-p.replays:
			if err = p.land(); err != nil {
				req.done <- replayResp{err: fmt.Errorf("duplex: %s: retry of %s: %w", p.dir, req.change, ErrNotRunning)}
			} else {
				err = p.serveReplay(req)
			}
		case <-p.ctx.Done():
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if err != nil {
			if errors.Is(err, errAborted) {
				return nil
			}
			return err
		}
		p.ack()
	}
	if err := p.land(); err != nil {
		if errors.Is(err, errAborted) {
			return nil
		}
		return err
	}
	p.ack()
	return nil
}
