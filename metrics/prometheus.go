package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/duplexsync/duplex"
)

// DepthRow is one group of pending DLQ entries.
type DepthRow struct {
	Direction, Table, Reason string
	Count                    int
	// Oldest is when the group's oldest pending entry was first seen
	// (zero: unknown), for duplex_dlq_oldest_pending_age_seconds.
	Oldest time.Time
}

// DepthFunc reads the DLQ depth; dlq stores provide it (adapt dlq.Store.Depth).
type DepthFunc func(ctx context.Context) ([]DepthRow, error)

// RetainedFunc reads how many WAL bytes a replication slot retains.
type RetainedFunc func(ctx context.Context) (int64, error)

// Config configures the exporter.
type Config struct {
	// Depth, when set, is read at scrape time for duplex_dlq_depth.
	Depth DepthFunc
	// Slots maps slot names to functions reading their retained WAL, read at
	// scrape time for duplex_slot_retained_wal_bytes.
	Slots map[string]RetainedFunc
	// ScrapeTimeout bounds the scrape-time reads. 0: 5s.
	ScrapeTimeout time.Duration
	// LagBuckets are the histogram buckets in seconds. nil: 1ms to ~65s.
	LagBuckets []float64
	// Logger receives scrape-time read errors. nil: slog.Default().
	Logger *slog.Logger
}

// Prometheus implements duplex.Observer and prometheus.Collector.
type Prometheus struct {
	duplex.NopObserver
	cfg Config

	applied   *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	lag       *prometheus.GaugeVec
	lagHist   *prometheus.HistogramVec
	retries   *prometheus.CounterVec
	conflicts *prometheus.CounterVec
	dead      *prometheus.CounterVec
	drift     *prometheus.CounterVec
	dedupErrs *prometheus.CounterVec
	acked     *prometheus.CounterVec

	depthDesc    *prometheus.Desc
	retainedDesc *prometheus.Desc
	rateDesc     *prometheus.Desc
	oldestDesc   *prometheus.Desc

	mu      sync.Mutex
	last    map[string]time.Duration // direction -> lag of the last applied change
	waiting map[string]wait          // direction -> the outage it waits out, if any
	handled map[string]float64       // direction -> changes decided (applied, no-op, dead-lettered)
	contest map[string]float64       // direction -> conflicts
}

var (
	_ duplex.Observer      = (*Prometheus)(nil)
	_ prometheus.Collector = (*Prometheus)(nil)
)

// New returns an exporter; register it with a prometheus.Registerer.
func New(cfg Config) *Prometheus {
	if cfg.ScrapeTimeout <= 0 {
		cfg.ScrapeTimeout = 5 * time.Second
	}
	if cfg.LagBuckets == nil {
		cfg.LagBuckets = prometheus.ExponentialBuckets(0.001, 2, 17)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	return &Prometheus{
		cfg:     cfg,
		applied: counter("duplex_changes_applied_total", "Changes written to the target.", "direction", "table"),
		skipped: counter("duplex_changes_skipped_total", "Changes settled without a write (echo, duplicate, noop).", "direction", "table", "reason"),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "duplex_sync_lag_seconds", Help: "Time from source commit to target commit of the last applied change.",
		}, []string{"direction"}),
		lagHist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "duplex_apply_lag_seconds", Help: "Time from source commit to target commit of applied changes.", Buckets: cfg.LagBuckets,
		}, []string{"direction"}),
		retries:   counter("duplex_retries_total", "Failed apply attempts that were retried.", "direction", "class"),
		conflicts: counter("duplex_conflicts_total", "Changes with fields both sides changed, by kind and how they ended.", "direction", "table", "kind", "resolution"),
		dead:      counter("duplex_dead_letters_total", "Changes sent to the dead-letter queue.", "direction", "table", "reason"),
		drift:     counter("duplex_schema_drift_total", "Fields one side has and the other lacks (missing_on: target or source), counted once per table and field per run.", "direction", "table", "field", "missing_on"),
		dedupErrs: counter("duplex_dedup_errors_total", "Deduper failures the Pipeline carried on without.", "direction", "op"),
		acked:     counter("duplex_acked_total", "Positions acknowledged to the source.", "direction"),
		depthDesc: prometheus.NewDesc("duplex_dlq_depth", "Pending dead-letter entries.", []string{"direction", "table", "reason"}, nil),
		retainedDesc: prometheus.NewDesc("duplex_slot_retained_wal_bytes",
			"WAL bytes a replication slot holds back on the server.", []string{"slot"}, nil),
		rateDesc: prometheus.NewDesc("duplex_conflict_rate_per_1000_changes",
			"Conflicts per 1,000 changes decided (applied, no-op or dead-lettered) since the process started.", []string{"direction"}, nil),
		oldestDesc: prometheus.NewDesc("duplex_dlq_oldest_pending_age_seconds",
			"Age of the oldest pending dead-letter entry (since it was first seen).", []string{"direction", "table", "reason"}, nil),
		last:    map[string]time.Duration{},
		waiting: map[string]wait{},
		handled: map[string]float64{},
		contest: map[string]float64{},
	}
}

// count adds to the per-direction tallies behind the conflict rate.
func (p *Prometheus) count(m map[string]float64, direction string, n float64) {
	p.mu.Lock()
	m[direction] += n
	p.mu.Unlock()
}

func (p *Prometheus) collectors() []prometheus.Collector {
	return []prometheus.Collector{p.applied, p.skipped, p.lag, p.lagHist, p.retries, p.conflicts, p.dead, p.drift, p.dedupErrs, p.acked}
}

// Describe implements prometheus.Collector.
func (p *Prometheus) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range p.collectors() {
		c.Describe(ch)
	}
	ch <- p.depthDesc
	ch <- p.retainedDesc
	ch <- p.rateDesc
	ch <- p.oldestDesc
}

// Collect implements prometheus.Collector; it reads the DLQ depth and the
// slots' retained WAL now.
func (p *Prometheus) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	for d, w := range p.waiting {
		// Waiting out an outage: nothing is applied, the lag grows.
		p.lag.WithLabelValues(d).Set(max(p.last[d], time.Since(w.since)).Seconds())
	}
	p.mu.Unlock()
	for _, c := range p.collectors() {
		c.Collect(ch)
	}
	p.mu.Lock()
	for d, n := range p.handled {
		if n > 0 {
			ch <- prometheus.MustNewConstMetric(p.rateDesc, prometheus.GaugeValue, 1000*p.contest[d]/n, d)
		}
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ScrapeTimeout)
	defer cancel()
	if p.cfg.Depth != nil {
		rows, err := p.cfg.Depth(ctx)
		if err != nil {
			p.cfg.Logger.WarnContext(ctx, "metrics: read dlq depth", slog.Any("err", err))
		}
		for _, r := range rows {
			ch <- prometheus.MustNewConstMetric(p.depthDesc, prometheus.GaugeValue, float64(r.Count), r.Direction, r.Table, r.Reason)
			if !r.Oldest.IsZero() && r.Count > 0 {
				ch <- prometheus.MustNewConstMetric(p.oldestDesc, prometheus.GaugeValue, time.Since(r.Oldest).Seconds(), r.Direction, r.Table, r.Reason)
			}
		}
	}
	for slot, f := range p.cfg.Slots {
		n, err := f(ctx)
		if err != nil {
			p.cfg.Logger.WarnContext(ctx, "metrics: read retained wal", "slot", slot, slog.Any("err", err))
			continue
		}
		ch <- prometheus.MustNewConstMetric(p.retainedDesc, prometheus.GaugeValue, float64(n), slot)
	}
}

// Collectors returns one of the exporter's metric vectors' children, for
// tests and custom dashboards: name is applied, skipped, retries, conflicts,
// dead, drift, dedup_errors or acked; labels are its label values in order.
func (p *Prometheus) Collectors(name string, labels ...string) prometheus.Collector {
	vecs := map[string]*prometheus.CounterVec{
		"applied": p.applied, "skipped": p.skipped, "retries": p.retries, "conflicts": p.conflicts,
		"dead": p.dead, "drift": p.drift, "dedup_errors": p.dedupErrs, "acked": p.acked,
	}
	v, ok := vecs[name]
	if !ok {
		return nil
	}
	return v.WithLabelValues(labels...)
}

// Lag returns the lag of the last change applied in direction (0 if none).
func (p *Prometheus) Lag(direction string) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w, ok := p.waiting[direction]; ok {
		return max(p.last[direction], time.Since(w.since))
	}
	return p.last[direction]
}

// wait is an outage a direction waits out: since when, and the error.
type wait struct {
	since  time.Time
	reason string
}

// Waiting reports whether direction is waiting out an outage (its
// retries fail with unavailable or transient errors and nothing has been
// applied since), since when, and the last error. While it waits, Lag and
// duplex_sync_lag_seconds grow with the wait.
func (p *Prometheus) Waiting(direction string) (since time.Time, reason string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.waiting[direction]
	return w.since, w.reason, ok
}

// progressed ends a direction's wait.
func (p *Prometheus) progressed(direction string) {
	p.mu.Lock()
	delete(p.waiting, direction)
	p.mu.Unlock()
}

// Applied implements duplex.Observer.
func (p *Prometheus) Applied(_ context.Context, e duplex.AppliedEvent) {
	d := e.Direction.String()
	p.applied.WithLabelValues(d, e.Table.String()).Add(float64(e.Count))
	p.count(p.handled, d, float64(e.Count))
	p.progressed(d)
	if len(e.Lags) == 0 {
		return
	}
	h := p.lagHist.WithLabelValues(d)
	for _, l := range e.Lags {
		h.Observe(l.Seconds())
	}
	last := e.Lags[len(e.Lags)-1]
	p.lag.WithLabelValues(d).Set(last.Seconds())
	p.mu.Lock()
	p.last[d] = last
	p.mu.Unlock()
}

// Skipped implements duplex.Observer.
func (p *Prometheus) Skipped(_ context.Context, e duplex.SkippedEvent) {
	p.skipped.WithLabelValues(e.Direction.String(), e.Table.String(), string(e.Reason)).Add(float64(e.Count))
	if e.Reason == duplex.SkipNoop {
		p.count(p.handled, e.Direction.String(), float64(e.Count))
		p.progressed(e.Direction.String())
	}
}

// Retried implements duplex.Observer.
func (p *Prometheus) Retried(_ context.Context, e duplex.RetriedEvent) {
	p.retries.WithLabelValues(e.Direction.String(), e.Class.String()).Inc()
	if e.Class != duplex.ClassUnavailable && e.Class != duplex.ClassTransient {
		return
	}
	reason := e.Class.String()
	if e.Err != nil {
		reason += ": " + e.Err.Error()
	}
	if r := []rune(reason); len(r) > 300 {
		reason = string(r[:299]) + "…"
	}
	d := e.Direction.String()
	p.mu.Lock()
	w, ok := p.waiting[d]
	if !ok {
		w.since = time.Now()
	}
	w.reason = reason
	p.waiting[d] = w
	p.mu.Unlock()
}

// Conflicted implements duplex.Observer.
func (p *Prometheus) Conflicted(_ context.Context, e duplex.ConflictEvent) {
	p.conflicts.WithLabelValues(e.Direction.String(), e.Table.String(), e.Kind.String(), string(e.Resolution)).Inc()
	p.count(p.contest, e.Direction.String(), 1)
}

// DeadLettered implements duplex.Observer.
func (p *Prometheus) DeadLettered(_ context.Context, e duplex.DeadLetterEvent) {
	p.dead.WithLabelValues(e.Direction.String(), e.Table.String(), string(e.Reason)).Inc()
	p.count(p.handled, e.Direction.String(), 1)
}

// Acked implements duplex.Observer.
func (p *Prometheus) Acked(_ context.Context, e duplex.AckEvent) {
	p.acked.WithLabelValues(e.Direction.String()).Inc()
}

// DedupFailed implements duplex.Observer.
func (p *Prometheus) DedupFailed(_ context.Context, e duplex.DedupFailedEvent) {
	p.dedupErrs.WithLabelValues(e.Direction.String(), e.Op).Inc()
}

// Drifted implements duplex.Observer.
func (p *Prometheus) Drifted(_ context.Context, e duplex.DriftEvent) {
	missing := "target"
	if e.SourceLost {
		missing = "source"
	}
	p.drift.WithLabelValues(e.Direction.String(), e.Table.String(), e.Field, missing).Inc()
}
