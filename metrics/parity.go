package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/duplexsync/duplex/reconcile"
)

// Parity exports the results of parity checks and reconciliations
// (package reconcile) as Prometheus metrics. Feed it from the Checker's Run
// callback and after each Reconcile; it is safe for concurrent use.
//
//	p := metrics.NewParity()
//	reg.MustRegister(p)
//	go checker.Run(ctx, 10*time.Minute, func(_ context.Context, r *reconcile.Report) { p.RecordCheck(r) })
//	rr, err := reconciler.Reconcile(ctx, report)
//	p.RecordRepair(rr)
//
// # Metrics
//
//   - duplex_parity_rows{side,table}: rows on each side at the last check
//   - duplex_parity_ranges{table}: key ranges compared at the last check
//   - duplex_parity_mismatched_ranges{table}: ranges that differed at the last check
//   - duplex_parity_last_check_timestamp_seconds{table}: when the last check that completed began
//   - duplex_parity_check_duration_seconds{table}: how long it took
//   - duplex_parity_false_alarms_total{table}: ranges that differed, then agreed on the recheck
//   - duplex_parity_check_errors_total{table}: checks that failed
//   - duplex_reconciled_total{table,outcome}: keys repaired, by outcome
type Parity struct {
	rows        *prometheus.GaugeVec
	ranges      *prometheus.GaugeVec
	mismatched  *prometheus.GaugeVec
	lastCheck   *prometheus.GaugeVec
	duration    *prometheus.GaugeVec
	falseAlarms *prometheus.CounterVec
	errors      *prometheus.CounterVec
	reconciled  *prometheus.CounterVec
}

var _ prometheus.Collector = (*Parity)(nil)

// NewParity returns a parity exporter; register it with a
// prometheus.Registerer.
func NewParity() *Parity {
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	return &Parity{
		rows:        gauge("duplex_parity_rows", "Rows on each side at the last parity check.", "side", "table"),
		ranges:      gauge("duplex_parity_ranges", "Key ranges compared at the last parity check.", "table"),
		mismatched:  gauge("duplex_parity_mismatched_ranges", "Key ranges whose count or checksum differed at the last parity check.", "table"),
		lastCheck:   gauge("duplex_parity_last_check_timestamp_seconds", "Start of the last parity check that completed, in Unix seconds.", "table"),
		duration:    gauge("duplex_parity_check_duration_seconds", "Duration of the last parity check that completed.", "table"),
		falseAlarms: counter("duplex_parity_false_alarms_total", "Key ranges that differed, then agreed when checked again (changes in flight).", "table"),
		errors:      counter("duplex_parity_check_errors_total", "Parity checks that failed.", "table"),
		reconciled:  counter("duplex_reconciled_total", "Keys the reconciler repaired, by outcome.", "table", "outcome"),
	}
}

func (p *Parity) collectors() []prometheus.Collector {
	return []prometheus.Collector{p.rows, p.ranges, p.mismatched, p.lastCheck, p.duration, p.falseAlarms, p.errors, p.reconciled}
}

// Describe implements prometheus.Collector.
func (p *Parity) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range p.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (p *Parity) Collect(ch chan<- prometheus.Metric) {
	for _, c := range p.collectors() {
		c.Collect(ch)
	}
}

// RecordCheck records a table's parity report. A failed check (r.Err) only
// counts an error: the gauges keep the last completed check's figures.
func (p *Parity) RecordCheck(r *reconcile.Report) {
	if r == nil {
		return
	}
	t := r.Table.String()
	if r.Err != nil {
		p.errors.WithLabelValues(t).Inc()
		return
	}
	p.rows.WithLabelValues(reconcile.SideA, t).Set(float64(r.RowsA))
	p.rows.WithLabelValues(reconcile.SideB, t).Set(float64(r.RowsB))
	p.ranges.WithLabelValues(t).Set(float64(r.Ranges))
	p.mismatched.WithLabelValues(t).Set(float64(len(r.Mismatched)))
	p.lastCheck.WithLabelValues(t).Set(float64(r.Started.UnixNano()) / 1e9)
	p.duration.WithLabelValues(t).Set(r.Duration.Seconds())
	p.falseAlarms.WithLabelValues(t).Add(float64(r.FalseAlarms))
}

// RecordRepair adds a reconciliation's outcomes to duplex_reconciled_total.
func (p *Parity) RecordRepair(r *reconcile.RepairReport) {
	if r == nil {
		return
	}
	t := r.Table.String()
	for outcome, n := range r.Outcomes {
		p.reconciled.WithLabelValues(t, string(outcome)).Add(float64(n))
	}
}

// Collectors returns one child of the exporter's metric vectors, for tests
// and custom dashboards: name is rows, ranges, mismatched, last_check,
// duration, false_alarms, errors or reconciled; labels are its label
// values in order. It returns nil for an unknown name.
func (p *Parity) Collectors(name string, labels ...string) prometheus.Collector {
	gauges := map[string]*prometheus.GaugeVec{
		"rows": p.rows, "ranges": p.ranges, "mismatched": p.mismatched, "last_check": p.lastCheck, "duration": p.duration,
	}
	if g, ok := gauges[name]; ok {
		return g.WithLabelValues(labels...)
	}
	counters := map[string]*prometheus.CounterVec{"false_alarms": p.falseAlarms, "errors": p.errors, "reconciled": p.reconciled}
	if c, ok := counters[name]; ok {
		return c.WithLabelValues(labels...)
	}
	return nil
}
