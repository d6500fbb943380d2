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
	// Waiting reports whether a direction is waiting out an outage, since
	// when and why; Prometheus.Waiting fits. nil: not reported.
	Waiting func(direction string) (since time.Time, reason string, ok bool)
	// Depth reads the DLQ depth; nil: not checked.
	Depth DepthFunc
	// MaxRetainedWAL is the most WAL bytes a replication slot may hold back
	// (a stopped or lagging sync makes the source server keep its WAL,
	// until its disk is full). 0: not checked. See Slots.
	MaxRetainedWAL int64
	// Slots reads each slot's retained WAL (Config.Slots of the
	// Prometheus observer fits); nil: not checked.
	Slots map[string]RetainedFunc
	// Timeout bounds the DLQ read. 0: 5s.
	Timeout time.Duration
	// Onboarding, when set, returns lines describing an onboarding in
	// progress (Onboarding.Lines fits); they follow the figures. They never
	// make the sync unhealthy.
	Onboarding func() []string
}

// Health returns an http.Handler for /healthz: 200 and "ok" with the
// figures when the sync is healthy, 503 with one line per reason when lag
// or DLQ depth or a slot's retained WAL pass their thresholds (or cannot be
// read).
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
			why := ""
			if cfg.Waiting != nil {
				if since, reason, ok := cfg.Waiting(d); ok {
					why = fmt.Sprintf(": waiting since %s for an outage to end (%s)", since.UTC().Format(time.RFC3339), reason)
					figures = append(figures, fmt.Sprintf("%s waiting since %s", d, since.UTC().Format(time.RFC3339)))
				}
			}
			if cfg.MaxLag > 0 && lag > cfg.MaxLag {
				problems = append(problems, fmt.Sprintf("lag %s is %s, above %s%s", d, lag, cfg.MaxLag, why))
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
		slots := make([]string, 0, len(cfg.Slots))
		for name := range cfg.Slots {
			slots = append(slots, name)
		}
		sort.Strings(slots)
		for _, name := range slots {
			n, err := cfg.Slots[name](ctx)
			if err != nil {
				problems = append(problems, fmt.Sprintf("slot %s unreadable: %v", name, err))
				continue
			}
			figures = append(figures, fmt.Sprintf("slot %s retains %d bytes", name, n))
			if cfg.MaxRetainedWAL > 0 && n > cfg.MaxRetainedWAL {
				problems = append(problems, fmt.Sprintf("slot %s retains %d bytes of WAL, above %d: the sync is behind or stopped and the source server keeps its WAL", name, n, cfg.MaxRetainedWAL))
			}
		}
		var extra string
		if cfg.Onboarding != nil {
			for _, l := range cfg.Onboarding() {
				extra += l + "\n"
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy\n%s\n%s\n%s", strings.Join(problems, "\n"), strings.Join(figures, " "), extra)
			return
		}
		fmt.Fprintf(w, "ok\n%s\n%s", strings.Join(figures, " "), extra)
	})
}
