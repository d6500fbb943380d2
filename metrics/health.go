package metrics

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// HealthConfig sets when a sync counts as unhealthy.
type HealthConfig struct {
	// Directions lists the directions to check ("a_to_b", "b_to_a").
	Directions []string
	// MaxLag is the largest acceptable lag per direction. 0: not checked.
	MaxLag time.Duration
	// MaxDLQDepth is the largest acceptable number of pending dead letters
	// (all directions). 0: not checked; use -1 to require an empty DLQ.
	MaxDLQDepth int
	// Lag returns a direction's current lag; Prometheus.Lag fits.
	Lag func(direction string) time.Duration
	// Depth reads the DLQ depth; nil: not checked.
	Depth DepthFunc
	// Timeout bounds the DLQ read. 0: 5s.
	Timeout time.Duration
}

// Health returns an http.Handler for /healthz: 200 and "ok" with the
// figures when the sync is healthy, 503 with one line per reason when lag
// or DLQ depth pass their thresholds (or the DLQ cannot be read).
func Health(cfg HealthConfig) http.Handler {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), cfg.Timeout)
		defer cancel()
		var problems, figures []string
		dirs := append([]string(nil), cfg.Directions...)
		sort.Strings(dirs)
		for _, d := range dirs {
			if cfg.Lag == nil {
				break
			}
			lag := cfg.Lag(d)
			figures = append(figures, fmt.Sprintf("lag %s=%s", d, lag))
			if cfg.MaxLag > 0 && lag > cfg.MaxLag {
				problems = append(problems, fmt.Sprintf("lag %s is %s, above %s", d, lag, cfg.MaxLag))
			}
		}
		if cfg.Depth != nil {
			rows, err := cfg.Depth(ctx)
			if err != nil {
				problems = append(problems, "dlq depth unreadable: "+err.Error())
			} else {
				depth := 0
				for _, row := range rows {
					depth += row.Count
				}
				figures = append(figures, fmt.Sprintf("dlq depth=%d", depth))
				limit := cfg.MaxDLQDepth
				if limit < 0 {
					limit = 0
				}
				if cfg.MaxDLQDepth != 0 && depth > limit {
					problems = append(problems, fmt.Sprintf("dlq depth is %d, above %d", depth, limit))
				}
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy\n%s\n%s\n", strings.Join(problems, "\n"), strings.Join(figures, " "))
			return
		}
		fmt.Fprintf(w, "ok\n%s\n", strings.Join(figures, " "))
	})
}
