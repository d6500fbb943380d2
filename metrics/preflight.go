package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/duplexsync/duplex"
)

// PreflightCollector exports a preflight report (duplex.Sync.Report) as
// duplex_preflight_findings{table,check,severity}: how many findings of
// each kind and severity the last check made ("" table: about the sync as
// a whole). It reads report at scrape time; nil (no check yet) exports
// nothing.
type PreflightCollector struct {
	report func() *duplex.Report
	desc   *prometheus.Desc
}

// NewPreflight returns a PreflightCollector reading report.
func NewPreflight(report func() *duplex.Report) *PreflightCollector {
	return &PreflightCollector{report: report, desc: prometheus.NewDesc("duplex_preflight_findings",
		"Findings of the preflight check made at start, per table, check and severity (blocker, warning, fine).",
		[]string{"table", "check", "severity"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *PreflightCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *PreflightCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.report()
	if r == nil {
		return
	}
	type key struct{ table, check, severity string }
	counts := map[key]int{}
	var order []key
	for _, f := range r.All() {
		k := key{f.Table.String(), f.Check, f.Severity.String()}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	for _, k := range order {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[k]), k.table, k.check, k.severity)
	}
}
