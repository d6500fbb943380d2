package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/metrics"
)

// TestOnboarding: progress shows as duplex_onboarding_* series and as a
// /healthz line while the table runs; once done, the line goes and
// running drops to 0, the health stays ok throughout.
func TestOnboarding(t *testing.T) {
	t.Parallel()
	o := metrics.NewOnboarding()
	reg := prometheus.NewRegistry()
	reg.MustRegister(o)
	tbl := duplex.Table{Schema: "public", Name: "customers"}
	o.Progress(duplex.OnboardingProgress{Table: tbl, Compared: 1000, Copied: 600, Agreed: 300, Decided: 90, Held: 10, Estimate: 4000, Elapsed: 2 * time.Second})
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP duplex_onboarding_eta_seconds Onboarding: estimated time left.
# TYPE duplex_onboarding_eta_seconds gauge
duplex_onboarding_eta_seconds{table="public.customers"} 6
# HELP duplex_onboarding_rows_estimated Onboarding: the catalog's estimate of the table's rows (larger side).
# TYPE duplex_onboarding_rows_estimated gauge
duplex_onboarding_rows_estimated{table="public.customers"} 4000
# HELP duplex_onboarding_rows_per_second Onboarding: keys compared per second.
# TYPE duplex_onboarding_rows_per_second gauge
duplex_onboarding_rows_per_second{table="public.customers"} 500
# HELP duplex_onboarding_rows_total Onboarding: keys compared and rows copied, agreed, decided, held (dead-lettered) and deferred (left to the stream), by table.
# TYPE duplex_onboarding_rows_total counter
duplex_onboarding_rows_total{outcome="agreed",table="public.customers"} 300
duplex_onboarding_rows_total{outcome="compared",table="public.customers"} 1000
duplex_onboarding_rows_total{outcome="copied",table="public.customers"} 600
duplex_onboarding_rows_total{outcome="decided",table="public.customers"} 90
duplex_onboarding_rows_total{outcome="deferred",table="public.customers"} 0
duplex_onboarding_rows_total{outcome="held",table="public.customers"} 10
# HELP duplex_onboarding_running 1 while the table is being onboarded, 0 once done.
# TYPE duplex_onboarding_running gauge
duplex_onboarding_running{table="public.customers"} 1
`)))
	h := metrics.Health(metrics.HealthConfig{Onboarding: o.Lines})
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/healthz", nil))
		return rec.Code, rec.Body.String()
	}
	code, body := get()
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n\nonboarding public.customers: compared 1000 of about 4000, copied 600, agreed 300, decided 90, held 10, 500 rows/s, eta 6s\n", body)

	o.Progress(duplex.OnboardingProgress{Table: tbl, Compared: 4000, Estimate: 4000, Elapsed: 8 * time.Second, Done: true})
	code, body = get()
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n\n", body)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP duplex_onboarding_running 1 while the table is being onboarded, 0 once done.
# TYPE duplex_onboarding_running gauge
duplex_onboarding_running{table="public.customers"} 0
`), "duplex_onboarding_running"))
}
