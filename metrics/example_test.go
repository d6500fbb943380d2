package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/metrics"
)

// The exporter is the sync's Observer and a Prometheus collector: register
// it, pass it as SyncConfig.Observer (or Config.Observer), and serve the
// registry. Here two events stand in for a running sync.
func Example() {
	m := metrics.New(metrics.Config{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	// duplex.NewSync(&duplex.SyncConfig{Observer: m, ...}) reports events
	// like these.
	ctx := context.Background()
	dir := duplex.Direction{From: "crm", To: "billing"}
	customers := duplex.Table{Schema: "public", Name: "customers"}
	m.Applied(ctx, duplex.AppliedEvent{Direction: dir, Table: customers, Count: 3, Lags: []time.Duration{40 * time.Millisecond}})
	m.Conflicted(ctx, duplex.ConflictEvent{Direction: dir, Table: customers, Kind: duplex.UpdateUpdate, Resolution: "applied"})

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "duplex_changes_applied_total") || strings.HasPrefix(line, "duplex_conflicts_total") ||
			strings.HasPrefix(line, "duplex_sync_lag_seconds") {
			fmt.Println(line)
		}
	}
	// Output:
	// duplex_changes_applied_total{direction="crm_to_billing",table="public.customers"} 3
	// duplex_conflicts_total{direction="crm_to_billing",kind="update_update",resolution="applied",table="public.customers"} 1
	// duplex_sync_lag_seconds{direction="crm_to_billing"} 0.04
}
