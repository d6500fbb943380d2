package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
