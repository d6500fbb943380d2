package metrics

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/duplexsync/duplex"
)

// Onboarding exports the progress of a sync's onboarding (the first start
// on two systems that already hold rows) to Prometheus, and as lines for
// /healthz (HealthConfig.Onboarding). Its Progress method is
// duplex.OnboardingConfig.Progress. It is safe for concurrent use.
//
//   - duplex_onboarding_rows_total{table,outcome}: keys compared, and rows
//     copied, agreed, decided, held (dead-lettered) and deferred (left to
//     the stream), in this process
//   - duplex_onboarding_running{table}: 1 while the table is onboarded
//   - duplex_onboarding_rows_estimated{table}: the catalog's row estimate
//   - duplex_onboarding_rows_per_second{table}: keys compared per second
//   - duplex_onboarding_eta_seconds{table}: the time left, estimated
type Onboarding struct {
	mu     sync.Mutex
	tables map[string]duplex.OnboardingProgress

	rows, running, estimated, rate, eta *prometheus.Desc
}

// NewOnboarding returns an Onboarding collector without progress.
func NewOnboarding() *Onboarding {
	return &Onboarding{
		tables:    map[string]duplex.OnboardingProgress{},
		rows:      prometheus.NewDesc("duplex_onboarding_rows_total", "Onboarding: keys compared and rows copied, agreed, decided, held (dead-lettered) and deferred (left to the stream), by table.", []string{"table", "outcome"}, nil),
		running:   prometheus.NewDesc("duplex_onboarding_running", "1 while the table is being onboarded, 0 once done.", []string{"table"}, nil),
		estimated: prometheus.NewDesc("duplex_onboarding_rows_estimated", "Onboarding: the catalog's estimate of the table's rows (larger side).", []string{"table"}, nil),
		rate:      prometheus.NewDesc("duplex_onboarding_rows_per_second", "Onboarding: keys compared per second.", []string{"table"}, nil),
		eta:       prometheus.NewDesc("duplex_onboarding_eta_seconds", "Onboarding: estimated time left.", []string{"table"}, nil),
	}
}

// Progress records p (duplex.OnboardingConfig.Progress).
func (o *Onboarding) Progress(p duplex.OnboardingProgress) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tables[p.Table.String()] = p
}

// Describe implements prometheus.Collector.
func (o *Onboarding) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{o.rows, o.running, o.estimated, o.rate, o.eta} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (o *Onboarding) Collect(ch chan<- prometheus.Metric) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for t, p := range o.tables {
		for _, c := range []struct {
			outcome string
			n       int64
		}{{"compared", p.Compared}, {"copied", p.Copied}, {"agreed", p.Agreed}, {"decided", p.Decided}, {"held", p.Held}, {"deferred", p.Deferred}} {
			ch <- prometheus.MustNewConstMetric(o.rows, prometheus.CounterValue, float64(c.n), t, c.outcome)
		}
		running := 1.0
		if p.Done {
			running = 0
		}
		ch <- prometheus.MustNewConstMetric(o.running, prometheus.GaugeValue, running, t)
		ch <- prometheus.MustNewConstMetric(o.estimated, prometheus.GaugeValue, float64(p.Estimate), t)
		ch <- prometheus.MustNewConstMetric(o.rate, prometheus.GaugeValue, p.Rate(), t)
		ch <- prometheus.MustNewConstMetric(o.eta, prometheus.GaugeValue, p.ETA().Seconds(), t)
	}
}

// Lines returns one line per table being onboarded (none once every table
// is done), for /healthz.
func (o *Onboarding) Lines() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for t, p := range o.tables {
		if p.Done {
			continue
		}
		out = append(out, fmt.Sprintf("onboarding %s: compared %d of about %d, copied %d, agreed %d, decided %d, held %d, %.0f rows/s, eta %s",
			t, p.Compared, p.Estimate, p.Copied, p.Agreed, p.Decided, p.Held, p.Rate(), p.ETA().Round(time.Second)))
	}
	sort.Strings(out)
	return out
}
