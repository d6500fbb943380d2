package duplexpg

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/check/checkpg"
	"github.com/duplexsync/duplex/dedup/dedupredis"
	"github.com/duplexsync/duplex/dlq/dlqpg"
	"github.com/duplexsync/duplex/metrics"
)

// built is what NewSync and NewPipeline build on two endpoints: for a
// Sync ends are A and B, for a Pipeline the source's endpoint and the
// target's.
type built struct {
	cfg        Config
	ends       [2]*Endpoint
	resolver   duplex.Resolver
	policy     string // the resolver's description
	dead       *dlqpg.Store
	metrics    *metrics.Prometheus
	onboarding *metrics.Onboarding
	depth      metrics.DepthFunc
	slots      map[string]metrics.RetainedFunc
	directions []string
	registered []prometheus.Collector
}

// checkPair checks two endpoints against each other and cfg, reads their
// catalogs and builds the resolver; it creates nothing. capturing lists
// the endpoints whose changes are captured.
func checkPair(ctx context.Context, a, b *Endpoint, cfg Config, capturing ...*Endpoint) (*built, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var errs []error
	if a.cfg.Sync != b.cfg.Sync {
		errs = append(errs, fmt.Errorf("duplexpg: the endpoints belong to different syncs: %s to %q, %s to %q", a.cfg.Label, a.cfg.Sync, b.cfg.Label, b.cfg.Sync))
	}
	if a.cfg.System == b.cfg.System {
		errs = append(errs, fmt.Errorf("duplexpg: both endpoints are named system %q: give each its own", a.cfg.System))
	}
	for _, e := range []*Endpoint{a, b} {
		if e.built {
			errs = append(errs, fmt.Errorf("duplexpg: endpoint %s already serves a sync: open it again for another", e.cfg.Label))
		}
		if e.pool == nil {
			errs = append(errs, fmt.Errorf("duplexpg: endpoint %s is closed", e.cfg.Label))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := differentDatabases(ctx, a, b); err != nil {
		return nil, err
	}
	if cfg.Capture == Logical {
		for _, e := range capturing {
			if err := checkWALLevel(ctx, e.pool, e.cfg.Label, cfg.label("Capture")); err != nil {
				return nil, err
			}
		}
	}
	ends := [2]*Endpoint{a, b}
	for _, e := range ends {
		if e.tables, err = inspectTables(ctx, e.pool, e.cfg.Label, cfg.Tables); err != nil {
			errs = append(errs, err)
		}
		if e.commitTimes, err = trackCommitTimes(ctx, e.pool, e.cfg.Label); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Capture == Logical && cfg.KeepReplicaIdentity {
		for _, e := range capturing {
			errs = append(errs, checkReplicaIdentity(e.cfg.Label, cfg.label("KeepReplicaIdentity"), cfg.Tables, e.tables))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := compareKeys(cfg.Tables, a.cfg.Label, b.cfg.Label, a.tables, b.tables); err != nil {
		return nil, err
	}
	p := &built{cfg: cfg, ends: ends}
	if p.resolver, p.policy, err = p.buildResolver(); err != nil {
		return nil, err
	}
	return p, nil
}

// buildResolver builds the resolver chain: Authority, then Policy (by
// default last-write-wins per table).
func (p *built) buildResolver() (duplex.Resolver, string, error) {
	cfg := &p.cfg
	var chain []duplex.Resolver
	var errs []error
	if cfg.Authority != nil {
		systems := []string{p.ends[0].cfg.System, p.ends[1].cfg.System}
		for _, e := range p.ends {
			cols := make(map[duplex.Table][]string, len(e.tables))
			for t, info := range e.tables {
				cols[t] = info.columns()
			}
			if err := cfg.Authority.Validate(systems, cols); err != nil {
				errs = append(errs, fmt.Errorf("%s (checked against %s): %w", cfg.label("Authority"), e.cfg.Label, err))
			}
		}
		chain = append(chain, cfg.Authority)
	}
	policy, desc := cfg.Policy, "custom"
	if policy == nil {
		var err error
		if policy, desc, err = lwwPolicy(cfg.LWWColumn, cfg.label("LWWColumn"), cfg.Skew, cfg.Tables, p.ends, cfg.Logger); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, "", err
	}
	// The chain ends with the policy; anything it leaves undecided is
	// dead-lettered by the Pipeline.
	return duplex.Chain(append(chain, policy)...), desc, nil
}

// checker builds the sync's preflight.
func (p *built) checker() (*checkpg.Checker, error) {
	ri := ""
	if p.cfg.Capture == Logical {
		ri = "set"
		if p.cfg.KeepReplicaIdentity {
			ri = "full"
		}
	}
	a, b := p.ends[0], p.ends[1]
	c, err := checkpg.New(checkpg.Config{
		Sync: a.cfg.Sync, A: checkpg.Side{Name: a.cfg.System, Pool: a.pool}, B: checkpg.Side{Name: b.cfg.System, Pool: b.pool},
		Tables: p.cfg.Tables, Sequences: p.cfg.Sequences, ReplicaIdentity: ri, Triggers: p.cfg.Triggers, Logger: p.cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("preflight: %w", err)
	}
	return c, nil
}

// create takes the sync's lock on both endpoints and creates what is
// missing: the appliers' state (on the endpoints in writers), the change
// sources with their slots (on the endpoints in capturing, reading the
// other endpoint's checkpoint of them), the DLQ (on dlqOn), the metrics
// and dedup. On error the endpoints are left as they were before.
func (p *built) create(ctx context.Context, writers, capturing []*Endpoint, dlqOn *Endpoint) (err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, p.release())
		}
	}()
	cfg := &p.cfg
	for _, e := range p.ends {
		e.built = true
		if e.lock, err = takeLock(ctx, e, cfg.LockWait); err != nil {
			return err
		}
	}
	for _, e := range writers {
		if e.app, err = applypg.New(ctx, e.pool, applypg.Config{Sync: e.cfg.Sync, Target: e.cfg.System, Logger: cfg.Logger, Triggers: cfg.Triggers}); err != nil {
			return fmt.Errorf("%s: %w", e.cfg.Label, err)
		}
		e.endpoint.Applier = e.app
	}
	for _, e := range capturing {
		other := p.other(e)
		// The other side's checkpoint of this source says whether the sync
		// ran before: then the slot must exist (a missing one means lost
		// changes, an error), else it is created now, before streaming, so
		// nothing committed from here on is missed.
		pos, err := other.app.Checkpoint(ctx, e.cfg.System)
		if err != nil {
			return fmt.Errorf("%s: %w", other.cfg.Label, err)
		}
		if err := setupSource(ctx, cfg, e, pos != ""); err != nil {
			return err
		}
	}
	if p.dead, err = dlqpg.New(ctx, dlqOn.pool, dlqpg.Config{}); err != nil {
		return fmt.Errorf("%s: dead-letter queue: %w", dlqOn.cfg.Label, err)
	}
	sync := p.ends[0].cfg.Sync
	p.depth = func(ctx context.Context) ([]metrics.DepthRow, error) {
		rows, err := p.dead.Depth(ctx)
		var out []metrics.DepthRow
		for _, r := range rows {
			if r.Sync == sync {
				out = append(out, metrics.DepthRow{Direction: r.Direction, Table: r.Table, Reason: r.Reason, Count: r.Count, Oldest: r.Oldest})
			}
		}
		return out, err
	}
	p.slots = map[string]metrics.RetainedFunc{}
	for _, e := range capturing {
		if e.slot != "" {
			p.slots[e.slot] = e.retained
		}
	}
	p.metrics = metrics.New(metrics.Config{Depth: zeroDepths(p.depth, p.directions, cfg.Tables), Slots: p.slots, Logger: cfg.Logger})
	initCounters(p.metrics, p.directions, cfg.Tables)
	p.onboarding = metrics.NewOnboarding()
	for _, e := range writers {
		e.endpoint.Name = e.cfg.System
		if cfg.Redis == nil {
			continue
		}
		d, err := dedupredis.New(cfg.Redis, dedupredis.Config{Prefix: cfg.RedisPrefix + e.cfg.Sync + ":" + e.cfg.System + ":", Sync: e.cfg.Sync, Target: e.cfg.System})
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.label("Redis"), err)
		}
		e.endpoint.Deduper = d
	}
	for _, e := range capturing {
		e.endpoint.Name = e.cfg.System
	}
	return nil
}

// other returns the endpoint that is not e.
func (p *built) other(e *Endpoint) *Endpoint {
	if p.ends[0] == e {
		return p.ends[1]
	}
	return p.ends[0]
}

// register registers the collectors on cfg.Registerer, if any.
func (p *built) register(cs ...prometheus.Collector) error {
	if p.cfg.Registerer == nil {
		return nil
	}
	for _, c := range cs {
		if err := p.cfg.Registerer.Register(c); err != nil {
			return fmt.Errorf("duplexpg: register metrics: %w", err)
		}
		p.registered = append(p.registered, c)
	}
	return nil
}

// release undoes create: it unregisters the metrics and releases the
// endpoints' locks and sources; the endpoints can serve another sync.
func (p *built) release() error {
	var errs []error
	for _, c := range p.registered {
		p.cfg.Registerer.Unregister(c)
	}
	p.registered = nil
	for _, e := range p.ends {
		if e.close != nil {
			e.close()
		}
		if e.lock != nil {
			errs = append(errs, e.lock.unlock())
		}
		*e = Endpoint{cfg: e.cfg, pool: e.pool, database: e.database, log: e.log}
	}
	return errors.Join(errs...)
}

// Policy describes the resolver's policy for conflicts Authority leaves:
// "lww(updated_at, skew 500ms)" (with the tables that compare commit
// timestamps, if any), or "custom" for Config.Policy.
func (p *built) Policy() string { return p.policy }

// DeadLetters returns the dead-letter queue.
func (p *built) DeadLetters() *dlqpg.Store { return p.dead }

// tableList joins the tables' names with commas.
func tableList(ts []duplex.Table) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.String()
	}
	return strings.Join(parts, ",")
}
