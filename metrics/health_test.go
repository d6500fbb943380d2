package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/metrics"
)

func TestHealth(t *testing.T) {
	t.Parallel()
	lags := map[string]time.Duration{"a_to_b": 200 * time.Millisecond, "b_to_a": 3 * time.Second}
	depth := 0
	var depthErr error
	h := metrics.Health(metrics.HealthConfig{
		Directions: []string{"b_to_a", "a_to_b"}, MaxLag: time.Second, MaxDLQDepth: 10,
		Lag: func(d string) time.Duration { return lags[d] },
		Depth: func(context.Context) ([]metrics.DepthRow, error) {
			return []metrics.DepthRow{{Direction: "a_to_b", Count: depth}}, depthErr
		},
	})
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/healthz", nil))
		return rec.Code, rec.Body.String()
	}

	code, body := get()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "lag b_to_a is 3s, above 1s")
	require.NotContains(t, body, "lag a_to_b is")

	lags["b_to_a"] = 10 * time.Millisecond
	code, body = get()
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ok\nlag a_to_b=200ms lag b_to_a=10ms dlq depth=0\n", body)

	depth = 11
	code, body = get()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "dlq depth is 11, above 10")

	depth, depthErr = 0, errors.New("connection refused")
	code, body = get()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "dlq depth unreadable: connection refused")
}

func TestHealthRetainedWAL(t *testing.T) {
	t.Parallel()
	retained := int64(10 << 20)
	h := metrics.Health(metrics.HealthConfig{
		MaxRetainedWAL: 64 << 20,
		Slots: map[string]metrics.RetainedFunc{
			"duplex_s__a": func(context.Context) (int64, error) { return retained, nil },
			"duplex_s__b": func(context.Context) (int64, error) { return 0, nil },
		},
	})
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/healthz", nil))
		return rec.Code, rec.Body.String()
	}
	code, body := get()
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "slot duplex_s__a retains 10485760 bytes")
	retained = 65 << 20
	code, body = get()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "slot duplex_s__a retains 68157440 bytes of WAL, above 67108864")
}

// TestWaitingForAnOutage: retries failing with unavailable or transient
// errors make the direction wait: its lag grows with the wait and
// /healthz says why; the first change applied ends the wait.
func TestWaitingForAnOutage(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Config{Depth: func(context.Context) ([]metrics.DepthRow, error) {
		return []metrics.DepthRow{{Direction: "a_to_b", Table: "public.customers", Reason: "conflict", Count: 2,
			Oldest: time.Now().Add(-time.Hour)}}, nil
	}})
	ab := duplex.Direction{From: "a", To: "b"}
	m.Retried(t.Context(), duplex.RetriedEvent{Direction: ab, Class: duplex.ClassPermanent, Err: errors.New("no")})
	_, _, ok := m.Waiting("a_to_b")
	require.False(t, ok, "a permanent error is no outage")
	m.Retried(t.Context(), duplex.RetriedEvent{Direction: ab, Class: duplex.ClassUnavailable, Err: errors.New("dial tcp: connection refused")})
	since, reason, ok := m.Waiting("a_to_b")
	require.True(t, ok)
	require.Equal(t, "unavailable: dial tcp: connection refused", reason)
	require.GreaterOrEqual(t, m.Lag("a_to_b"), time.Since(since)-time.Millisecond)

	h := metrics.Health(metrics.HealthConfig{Directions: []string{"a_to_b"}, MaxLag: -1, Lag: m.Lag, Waiting: m.Waiting})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/healthz", nil))
	require.Contains(t, rec.Body.String(), "a_to_b waiting since")

	h = metrics.Health(metrics.HealthConfig{Directions: []string{"a_to_b"}, MaxLag: time.Nanosecond, Lag: m.Lag, Waiting: m.Waiting})
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/healthz", nil))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Contains(t, rec.Body.String(), "for an outage to end (unavailable: dial tcp: connection refused)")

	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	got, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]float64{}
	for _, mf := range got {
		for _, metric := range mf.GetMetric() {
			names[mf.GetName()] = metric.GetGauge().GetValue()
		}
	}
	require.Greater(t, names["duplex_dlq_oldest_pending_age_seconds"], 3500.0)
	require.Contains(t, names, "duplex_sync_lag_seconds", "the lag gauge is set while waiting")

	m.Applied(t.Context(), duplex.AppliedEvent{Direction: ab, Count: 1})
	_, _, ok = m.Waiting("a_to_b")
	require.False(t, ok, "applying a change ends the wait")
}
