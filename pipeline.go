package duplex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
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
	acked     Position
	ackFailed bool
	parked    map[string]*park
	parkedN   int
	parkedIDs map[string]struct{}
	conflict  Conflict
	drifted   map[string]bool
	locks     *keyLocks // shared with the other direction of a Sync

	checkpointAt time.Time // two-way: when recordSettled last stored a checkpoint

	// the target, and in two-way mode the source, with their agreement records
	target, source records

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
	resolution string
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
	if c.Peer != nil {
		p.source = recordsOf(c.Peer, c.PeerAgreements)
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
	defer cancel(ErrStopped)

	opCtx, opCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer opCancel()
	stopTimer := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(p.cfg.ShutdownTimeout, opCancel)
		context.AfterFunc(opCtx, func() { t.Stop() })
	})
	defer stopTimer()
	p.ctx, p.opCtx = ctx, opCtx

	var from Position
	if cp, ok := p.cfg.Target.(Checkpointer); ok {
		pos, err := cp.Checkpoint(ctx, p.dir.From)
		if err != nil && ctx.Err() != nil {
			return nil // stopped while starting: nothing was delivered
		}
		if err != nil {
			return fmt.Errorf("duplex: %s: read checkpoint: %w", p.dir, err)
		}
		from = pos
	}
	p.log.InfoContext(ctx, "pipeline starting", "from", string(from))

	in := make(chan []Change, p.cfg.QueueDepth)
	srcDone := make(chan error, 1)
	go func() {
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
		} else if ctx.Err() != nil {
			err = nil
		}
		srcDone <- err
	}()
	close(p.ready)

	werr := p.work(in)
	close(p.stopped)
	if werr != nil && !errors.Is(werr, errAborted) {
		cancel(werr)
	} else {
		werr = nil
	}
	// Unblock the source if the worker stopped first, then wait for it.
	if werr != nil {
		cancel(werr)
	}
	go func() {
		for range in { //nolint:revive // drain so a blocked fn returns
		}
	}()
	serr := <-srcDone
	if werr == nil {
		if cause := context.Cause(ctx); serr == nil && cause != nil && !errors.Is(cause, ErrStopped) &&
			!errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
			serr = cause
		}
	}
	err := errors.Join(werr, serr)
	if err != nil {
		p.log.ErrorContext(opCtx, "pipeline stopped", slog.Any("err", err))
	} else {
		p.log.InfoContext(opCtx, "pipeline stopped", "acked", string(p.acked))
	}
	return err
}

// work is the single worker goroutine: it owns all mutable state.
func (p *Pipeline) work(in <-chan []Change) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if p.ctx.Err() != nil {
			break
		}
		if in == nil && len(p.parked) == 0 {
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
		case <-timer.C:
			err = p.retryDue()
		case req := <-p.replays:
			err = p.serveReplay(req)
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
	p.ack()
	return nil
}

// coalesce appends to batch the batches already waiting in in, up to
// BatchSize changes, so that a backlog of small transactions is decided
// and applied in full chunks rather than one source batch at a time. It
// reports whether in is still open.
func (p *Pipeline) coalesce(batch []Change, in <-chan []Change) ([]Change, bool) {
	owned := false
	for len(batch) < p.cfg.BatchSize {
		select {
		case more, ok := <-in:
			if !ok {
				return batch, false
			}
			if len(more) == 0 {
				continue
			}
			if !owned {
				// The source's slices are read, never written to.
				batch = append(make([]Change, 0, max(p.cfg.BatchSize, len(batch)+len(more))), batch...)
				owned = true
			}
			batch = append(batch, more...)
		default:
			return batch, true
		}
	}
	return batch, true
}

// intake takes one batch from the source.
func (p *Pipeline) intake(batch []Change) error {
	items := make([]item, len(batch))
	ready := make([]*item, 0, len(batch))
	for i := range batch {
		c := &batch[i]
		it := &items[i]
		p.seq++
		it.c, it.seq, it.prev = c, p.seq, p.lastPos
		p.lastPos = c.Position
		it.key = orderKey(c)
		ready = append(ready, it)
	}
	var err error
	if ready, err = p.dropEchoes(ready); err != nil {
		return err
	}
	ready = p.dropDuplicates(ready)
	if p.cfg.Peer == nil {
		// In two-way mode a change the target's ledger holds may still owe
		// its write-back to the source (a crash in between); merging it
		// again is idempotent.
		if ready, err = p.dropApplied(ready); err != nil {
			return err
		}
	}
	return p.process(ready)
}

func (p *Pipeline) dropEchoes(items []*item) ([]*item, error) {
	if p.cfg.LoopGuard == nil {
		return items, nil
	}
	out := items[:0]
	echoes := 0
	for _, it := range items {
		echo, err := p.cfg.LoopGuard.Echo(p.opCtx, it.c)
		if err != nil {
			if p.ctx.Err() != nil {
				return nil, errAborted
			}
			return nil, fmt.Errorf("duplex: %s: loop guard on %s: %w", p.dir, it.c, err)
		}
		if echo {
			echoes++
			p.obs.Skipped(p.opCtx, SkippedEvent{Direction: p.dir, Table: it.c.Table, Reason: SkipEcho, Count: 1})
			continue
		}
		out = append(out, it)
	}
	if echoes > 0 {
		p.log.DebugContext(p.opCtx, "dropped echoes", "count", echoes)
	}
	return out, nil
}

// dropDuplicates removes the changes delivered before: those the Deduper
// has seen, those parked for a retry, and a second copy of one change
// within the intake.
func (p *Pipeline) dropDuplicates(items []*item) []*item {
	if len(items) == 0 {
		return items
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.c.ID
	}
	var seen []bool
	if p.dedupUsable() {
		var err error
		seen, err = p.dedup.Seen(p.opCtx, ids)
		if err == nil && len(seen) != len(ids) {
			err = fmt.Errorf("deduper returned %d answers for %d ids", len(seen), len(ids))
		}
		p.dedupResult("seen", err)
		if err != nil {
			seen = nil
		}
	}
	out := items[:0]
	taken := make(map[string]struct{}, len(items)) // a change delivered twice in one intake
	for i, it := range items {
		dup := seen != nil && seen[i]
		if !dup && len(p.parkedIDs) > 0 {
			_, dup = p.parkedIDs[it.c.ID]
		}
		if !dup && it.c.ID != "" {
			_, dup = taken[it.c.ID]
			taken[it.c.ID] = struct{}{}
		}
		if dup {
			p.obs.Skipped(p.opCtx, SkippedEvent{Direction: p.dir, Table: it.c.Table, Reason: SkipDuplicate, Count: 1})
			continue
		}
		out = append(out, it)
	}
	return out
}

// dropApplied removes the changes the target's ledger says were applied
// already (a replay after a crash, or a Deduper that forgot).
func (p *Pipeline) dropApplied(items []*item) ([]*item, error) {
	if p.ledger == nil || len(items) == 0 {
		return items, nil
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.c.ID
	}
	applied, err := p.askLedger(ids)
	if err != nil {
		return nil, err
	}
	out := items[:0]
	var dups []string
	for i, it := range items {
		if applied[i] {
			dups = append(dups, it.c.ID)
			p.obs.Skipped(p.opCtx, SkippedEvent{Direction: p.dir, Table: it.c.Table, Reason: SkipDuplicate, Count: 1})
			continue
		}
		out = append(out, it)
	}
	p.mark(dups)
	return out, nil
}

// askLedger asks the target's ledger about ids, waiting out failures: the
// Pipeline must not guess whether a change was applied.
func (p *Pipeline) askLedger(ids []string) ([]bool, error) {
	for attempt := 1; ; attempt++ {
		applied, err := p.ledger.Applied(p.opCtx, ids)
		if err == nil && len(applied) == len(ids) {
			return applied, nil
		}
		if err == nil {
			err = fmt.Errorf("ledger returned %d answers for %d ids", len(applied), len(ids))
		}
		if ClassOf(err) == ClassPermanent {
			return nil, fmt.Errorf("duplex: %s: ask the target which changes were applied: %w", p.dir, err)
		}
		d := p.retry.Delay(attempt)
		p.log.WarnContext(p.opCtx, "target ledger unavailable; waiting", "attempt", attempt, "backoff", d, slog.Any("err", err))
		if !backoff.Sleep(p.ctx, d) {
			return nil, errAborted
		}
	}
}

// committed reports whether the writes of pl committed, per the ledger
// (used after an apply error whose outcome is unknown).
func (p *Pipeline) committed(pl plan) (bool, error) {
	ids := make([]string, len(pl.writes))
	for i := range pl.writes {
		ids[i] = pl.writes[i].Change.ID
	}
	applied, err := p.askLedger(ids)
	if err != nil {
		return false, err
	}
	n := 0
	for _, a := range applied {
		if a {
			n++
		}
	}
	if n > 0 && n < len(ids) {
		p.log.WarnContext(p.opCtx, "ledger shows part of a batch applied; deciding again", "applied", n, "writes", len(ids))
	}
	return n == len(ids), nil
}

// process applies items in order, in batches. A TRUNCATE is a barrier:
// everything before it is settled first.
func (p *Pipeline) process(items []*item) error {
	for len(items) > 0 {
		n := min(p.cfg.BatchSize, len(items))
		for i := range n {
			if items[i].c.Op == OpTruncate {
				n = i
				break
			}
		}
		if n > 0 && n < len(items) && items[n-1].c.MovedTo != nil && items[n].c.MovedFrom != nil {
			n++ // the two halves of a move are merged in one chunk
		}
		if n == 0 {
			if err := p.truncate(items[0]); err != nil {
				return err
			}
			items = items[1:]
			continue
		}
		if err := p.runChunk(items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// truncate settles a TRUNCATE: propagated when allowed, else dead-lettered.
func (p *Pipeline) truncate(it *item) error {
	tr, ok := p.cfg.Target.(Truncater)
	if !p.cfg.PropagateTruncate || !ok {
		return p.deadLetter(it, ReasonTruncate, fmt.Sprintf(
			"TRUNCATE of %s on %s was not propagated to %s; review and truncate by hand, or enable PropagateTruncate",
			it.c.Table, p.dir.From, p.dir.To), nil)
	}
	for attempt := 1; ; attempt++ {
		err := tr.Truncate(p.opCtx, it.c.Table, it.c)
		if err == nil {
			p.log.InfoContext(p.opCtx, "truncate propagated", "table", it.c.Table.String())
			p.mark([]string{it.c.ID})
			return nil
		}
		class := ClassOf(err)
		if class == ClassPermanent || exhausted(class, attempt, p.cfg.MaxAttempts) {
			it.attempts = attempt
			return p.deadLetter(it, ReasonTruncate, "truncate failed: "+err.Error(), nil)
		}
		if !p.wait(attempt, 1, class, err) {
			return errAborted
		}
	}
}

// routeParked queues items whose key waits behind a failing change.
func (p *Pipeline) routeParked(items []*item) []*item {
	if len(p.parked) == 0 {
		return items
	}
	out := make([]*item, 0, len(items))
	for _, it := range items {
		if pk := p.parked[it.key]; pk != nil {
			pk.queue = append(pk.queue, it)
			p.parkedN++
			p.parkedIDs[it.c.ID] = struct{}{}
			continue
		}
		out = append(out, it)
	}
	return out
}

// runChunk plans and applies items (at most BatchSize) until each is
// settled or parked for a retry.
func (p *Pipeline) runChunk(items []*item) error {
	items = p.routeParked(items)
	if len(items) == 0 {
		return nil
	}
	attempt, stale := 0, 0
	for {
		unlock := p.lockChunk(items)
		pl, err := p.plan(items)
		if err == nil && (len(pl.writes) > 0 || len(pl.agreeTarget) > 0) {
			err = p.target.apply(p.opCtx, &Batch{Writes: pl.writes, Agreements: pl.agreeTarget, Source: p.dir.From, Checkpoint: p.checkpoint(items, pl)})
			if be := (*BatchError)(nil); errors.As(err, &be) && be.Index >= 0 && be.Index < len(pl.writeItem) {
				err = &BatchError{Index: pl.writeItem[be.Index], Err: be.Err}
			}
		}
		if err == nil {
			return p.finish(items, &pl, unlock)
		}
		if p.ctx.Err() != nil && p.opCtx.Err() != nil {
			unlock()
			return errAborted
		}
		var be *BatchError
		isBatchErr := errors.As(err, &be)
		if p.ledger != nil && len(pl.writes) > 0 && !isBatchErr && !errors.Is(err, ErrStale) && !IsPermanent(err) {
			// The outcome is unknown: the batch may have committed before the
			// error. Ask the target's ledger before trying again.
			ok, lerr := p.committed(pl)
			if lerr != nil {
				unlock()
				return lerr
			}
			if ok {
				p.log.InfoContext(p.opCtx, "batch committed despite the error", "changes", len(items), slog.Any("err", err))
				return p.finish(items, &pl, unlock)
			}
		}
		unlock()
		if errors.Is(err, ErrStale) && stale < 10 {
			stale++
			p.log.DebugContext(p.opCtx, "target changed under the batch; deciding again", "changes", len(items))
			continue
		}
		class := ClassOf(err)
		if class == ClassUnavailable && len(items) == 1 && items[0].replay {
			return &replayError{err}
		}
		if class == ClassUnavailable {
			attempt++
			if !p.wait(attempt, len(items), class, err) {
				return errAborted
			}
			continue
		}
		if len(items) == 1 {
			return p.failOne(items[0], class, err)
		}
		if isBatchErr && be.Index >= 0 && be.Index < len(items) {
			j := be.Index
			for _, part := range [][]*item{items[:j], items[j : j+1], items[j+1:]} {
				if err := p.runChunk(part); err != nil {
					return err
				}
			}
			return nil
		}
		if class == ClassTransient && attempt < 2 {
			attempt++
			if !p.wait(attempt, len(items), class, err) {
				return errAborted
			}
			continue
		}
		mid := len(items) / 2
		if err := p.runChunk(items[:mid]); err != nil {
			return err
		}
		return p.runChunk(items[mid:])
	}
}

// checkpoint returns the position that is safe to resume after once the
// chunk commits: the end of the chunk, unless a change before that stays
// unsettled (parked for a retry, or about to be dead-lettered).
func (p *Pipeline) checkpoint(items []*item, pl plan) Position {
	last := items[len(items)-1]
	if last.replay {
		return ""
	}
	if p.cfg.Peer != nil {
		// A merge commits on the target before its source half: the chunk
		// is settled only once both committed. The checkpoint trails at
		// what was acknowledged, so a restart merges again what a crash
		// left half-done.
		return p.acked
	}
	var first *item
	for i := range pl.items {
		if pl.items[i].out == outDead || pl.items[i].alsoDead {
			first = items[i]
			break
		}
	}
	for _, pk := range p.parked {
		if first == nil || pk.head.seq < first.seq {
			first = pk.head
		}
	}
	if first != nil && first.seq <= last.seq {
		return first.prev
	}
	return last.c.Position
}

// wait sleeps before a retry of the whole chunk; false means stop.
func (p *Pipeline) wait(attempt, n int, class ErrorClass, err error) bool {
	d := p.retry.Delay(attempt)
	p.obs.Retried(p.opCtx, RetriedEvent{Direction: p.dir, Changes: n, Attempt: attempt, Class: class, Err: err, Backoff: d})
	p.log.WarnContext(p.opCtx, "apply failed; retrying", "changes", n, "attempt", attempt,
		"class", class.String(), "backoff", d, slog.Any("err", err))
	return backoff.Sleep(p.ctx, d)
}

// exhausted reports whether a change failing attempts times with an error
// of class has used up its retries. Only unclassified errors run out:
// an outage (unavailable) or a transient error (serialization failure,
// deadlock, lock timeout) is waited out however long it lasts, holding
// back the change's key (the lag rises, /healthz says why), and never
// dead-letters; a permanent error dead-letters at once.
func exhausted(class ErrorClass, attempts, maxAttempts int) bool {
	switch class {
	case ClassUnavailable, ClassTransient:
		return false
	case ClassPermanent:
		return true
	}
	return attempts >= maxAttempts
}

// failOne handles the failure of a single change: dead-letter it or park it
// for a later retry while other keys go on.
func (p *Pipeline) failOne(it *item, class ErrorClass, err error) error {
	it.attempts++
	if info, text, ok := uniqueConflict(p.dir, it.c, err, p.cfg.Peer != nil); ok {
		return p.deadLetter(it, ReasonConflict, text, info)
	}
	if class == ClassPermanent {
		return p.deadLetter(it, ReasonPermanentError, err.Error(), nil)
	}
	if it.replay || exhausted(class, it.attempts, p.cfg.MaxAttempts) {
		return p.deadLetter(it, ReasonRetriesExhausted, err.Error(), nil)
	}
	d := p.retry.Delay(it.attempts)
	p.obs.Retried(p.opCtx, RetriedEvent{Direction: p.dir, Changes: 1, Attempt: it.attempts, Class: class, Err: err, Backoff: d})
	p.log.WarnContext(p.opCtx, "change failed; parked for retry", "table", it.c.Table.String(),
		"key", it.c.Key.String(), "attempt", it.attempts, "backoff", d, slog.Any("err", err))
	pk := &park{head: it, next: p.cfg.Now().Add(d)}
	p.parked[it.key] = pk
	p.parkedN++
	p.parkedIDs[it.c.ID] = struct{}{}
	return nil
}

func (p *Pipeline) nextRetry() (time.Time, bool) {
	var next time.Time
	for _, pk := range p.parked {
		if next.IsZero() || pk.next.Before(next) {
			next = pk.next
		}
	}
	return next, !next.IsZero()
}

// retryDue retries the parked changes whose backoff has passed, oldest first,
// then releases the changes queued behind each one that settles.
func (p *Pipeline) retryDue() error {
	now := p.cfg.Now()
	var due []*park
	for _, pk := range p.parked {
		if !pk.next.After(now) {
			due = append(due, pk)
		}
	}
	slices.SortFunc(due, func(a, b *park) int { return compareSeq(a.head.seq, b.head.seq) })
	for _, pk := range due {
		key := pk.head.key
		delete(p.parked, key)
		p.parkedN -= 1 + len(pk.queue)
		delete(p.parkedIDs, pk.head.c.ID)
		for _, q := range pk.queue {
			delete(p.parkedIDs, q.c.ID)
		}
		if err := p.runChunk([]*item{pk.head}); err != nil {
			return err
		}
		if np := p.parked[key]; np != nil { // failed again: keep the queue behind it
			np.queue = append(np.queue, pk.queue...)
			p.parkedN += len(pk.queue)
			for _, q := range pk.queue {
				p.parkedIDs[q.c.ID] = struct{}{}
			}
			continue
		}
		if err := p.process(pk.queue); err != nil {
			return err
		}
	}
	return nil
}

// orderKey identifies the row a change touches: changes with equal keys
// keep their order.
func orderKey(c *Change) string {
	// Fast path for the common single integer key: one allocation.
	if len(c.Key) == 1 {
		if v, ok := c.Key[0].Value.(int64); ok {
			var buf [96]byte
			b := append(buf[:0], c.Table.Schema...)
			b = append(b, '.')
			b = append(b, c.Table.Name...)
			b = append(b, 0)
			b = append(b, c.Key[0].Name...)
			b = append(b, '=')
			b = strconv.AppendInt(b, v, 10)
			return string(b)
		}
	}
	var b strings.Builder
	b.Grow(len(c.Table.Schema) + len(c.Table.Name) + 24)
	b.WriteString(c.Table.Schema)
	b.WriteByte('.')
	b.WriteString(c.Table.Name)
	b.WriteByte(0)
	for i, col := range c.Key {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(col.Name)
		b.WriteByte('=')
		appendValue(&b, col.Value)
	}
	return b.String()
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ack acknowledges the furthest position with every change up to it settled.
func (p *Pipeline) ack() {
	pos := p.lastPos
	if len(p.parked) > 0 {
		var min *item
		for _, pk := range p.parked {
			if min == nil || pk.head.seq < min.seq {
				min = pk.head
			}
		}
		pos = min.prev
	}
	if pos == "" || pos == p.acked {
		p.ackFailed = false
		return
	}
	if err := p.cfg.Source.Ack(p.opCtx, pos); err != nil {
		if !p.ackFailed {
			p.log.WarnContext(p.opCtx, "acknowledge failed; will retry", "position", string(pos), slog.Any("err", err))
		}
		p.ackFailed = true
		return
	}
	p.ackFailed = false
	p.acked = pos
	p.obs.Acked(p.opCtx, AckEvent{Direction: p.dir, Position: pos})
	p.recordSettled(pos)
}

// recordSettled stores, in a two-way Pipeline, the settled position pos as
// the target's checkpoint when the chunks' own batches have not carried it
// for a second (they carry the position settled before them, see
// checkpoint): a restart then knows it resumes, so a lost slot is refused
// rather than created again. A failure only leaves the checkpoint further
// behind.
func (p *Pipeline) recordSettled(pos Position) {
	if p.cfg.Peer == nil {
		return
	}
	if _, ok := p.cfg.Target.(Checkpointer); !ok || p.cfg.Now().Sub(p.checkpointAt) < time.Second {
		return
	}
	p.checkpointAt = p.cfg.Now()
	if err := p.cfg.Target.Apply(p.opCtx, &Batch{Source: p.dir.From, Checkpoint: pos}); err != nil {
		p.log.DebugContext(p.opCtx, "could not record the settled position", "position", string(pos), slog.Any("err", err))
	}
}

// deadLetter puts one change into the DLQ, retrying while the sink is
// unavailable, and settles it.
func (p *Pipeline) deadLetter(it *item, reason Reason, text string, info *ConflictInfo) error {
	it.out, it.deadText = outDead, string(reason)+": "+text
	dl := &DeadLetter{
		Sync:      p.cfg.Name,
		Direction: p.dir,
		Change:    *it.c,
		Reason:    reason,
		Error:     text,
		Attempts:  it.attempts,
		Conflict:  info,
		At:        p.cfg.Now(),
	}
	if err := p.putDeadLetter(dl); err != nil {
		return err
	}
	p.obs.DeadLettered(p.opCtx, DeadLetterEvent{Direction: p.dir, Table: it.c.Table, Reason: reason})
	p.log.WarnContext(p.opCtx, "change dead-lettered", "table", it.c.Table.String(), "key", it.c.Key.String(),
		"op", it.c.Op.String(), "reason", string(reason), "error", text)
	p.mark([]string{it.c.ID})
	return nil
}

func (p *Pipeline) putDeadLetter(dl *DeadLetter) error {
	for attempt := 1; ; attempt++ {
		err := p.cfg.DeadLetters.Put(p.opCtx, dl)
		if err == nil {
			return nil
		}
		switch ClassOf(err) {
		case ClassUnavailable, ClassTransient:
			d := p.retry.Delay(attempt)
			p.log.WarnContext(p.opCtx, "dead-letter sink failed; retrying", "attempt", attempt, "backoff", d, slog.Any("err", err))
			if !backoff.Sleep(p.ctx, d) {
				return errAborted
			}
		default:
			return fmt.Errorf("duplex: %s: dead-letter %s: %w", p.dir, dl.Change.String(), err)
		}
	}
}

func (p *Pipeline) mark(ids []string) {
	if len(ids) == 0 {
		return
	}
	if !p.dedupUsable() {
		return
	}
	p.dedupResult("mark", p.dedup.Mark(p.opCtx, ids))
}

// dedupUsable reports whether the Deduper should be asked: after a failure
// it is left alone for a backoff period (the target's ledger and content
// checks carry on without it), so an outage does not cost every batch a
// timeout.
func (p *Pipeline) dedupUsable() bool {
	return p.dedupDownUntil.IsZero() || !p.cfg.Now().Before(p.dedupDownUntil)
}

// dedupResult records the outcome of a Deduper call: the first failure is
// logged and opens the backoff; the first success after it is logged too.
func (p *Pipeline) dedupResult(op string, err error) {
	if err == nil {
		if p.dedupFailures > 0 {
			p.log.InfoContext(p.opCtx, "deduper is back", "after_failures", p.dedupFailures)
		}
		p.dedupFailures, p.dedupDownUntil = 0, time.Time{}
		return
	}
	p.obs.DedupFailed(p.opCtx, DedupFailedEvent{Direction: p.dir, Op: op, Err: err})
	p.dedupFailures++
	d := p.retry.Delay(p.dedupFailures)
	p.dedupDownUntil = p.cfg.Now().Add(d)
	if p.dedupFailures == 1 {
		p.log.WarnContext(p.opCtx, "deduper failed; carrying on without it (the target's ledger still guards against duplicates)",
			"op", op, "retry_in", d, slog.Any("err", err))
	}
}
