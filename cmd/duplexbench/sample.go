package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// sampleEvery is how often the wall-clock sampler reads pg_stat_activity.
const sampleEvery = 10 * time.Millisecond

// sampler is a wall-clock profiler of the server side of a sync: it
// counts, over the measured phase, in which state each backend of the
// pair's databases with one of the given application_names was (active or idle,
// wait event, and the statement, with parameters folded), so that the
// time the apply spends waiting on round trips and commits shows up next
// to the time it computes. Idle backends (between transactions, or unused
// in the pool) are left out; "idle in transaction" is the sync's round
// trip inside a transaction.
type sampler struct {
	mu      sync.Mutex
	counts  map[string]int
	samples int
}

var (
	paramRe = regexp.MustCompile(`\$[0-9]+`)
	spaceRe = regexp.MustCompile(`\s+`)
)

// run samples until ctx ends.
func (s *sampler) run(ctx context.Context, c *cluster, p *pair, apps []string) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rows, err := c.admin.Query(ctx, `SELECT state, coalesce(wait_event_type || ':' || wait_event, '-'), left(query, 200)
			FROM pg_stat_activity WHERE datname IN ($1, $2) AND application_name = ANY($3) AND backend_type = 'client backend' AND state <> 'idle'`, p.a, p.b, apps)
		if err != nil {
			return
		}
		var keys []string
		for rows.Next() {
			var state, wait, query string
			if rows.Scan(&state, &wait, &query) != nil {
				break
			}
			q := spaceRe.ReplaceAllString(paramRe.ReplaceAllString(query, "$"), " ")
			if len(q) > 70 {
				q = q[:70]
			}
			keys = append(keys, fmt.Sprintf("%-19s | %-22s | %s", state, wait, q))
		}
		rows.Close()
		s.mu.Lock()
		if s.counts == nil {
			s.counts = map[string]int{}
		}
		s.samples++
		for _, k := range keys {
			s.counts[k]++
		}
		s.mu.Unlock()
	}
}

// top returns the n most frequent states with their share of the
// backend-samples.
func (s *sampler) top(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	keys := make([]string, 0, len(s.counts))
	for k, c := range s.counts {
		keys = append(keys, k)
		total += c
	}
	slices.SortFunc(keys, func(a, b string) int { return s.counts[b] - s.counts[a] })
	var b strings.Builder
	fmt.Fprintf(&b, "    wall-clock samples of the sync's non-idle backends (%d samples every %s, %d backend-samples):\n", s.samples, sampleEvery, total)
	for _, k := range keys[:min(n, len(keys))] {
		fmt.Fprintf(&b, "    %5.1f%%  %s\n", 100*float64(s.counts[k])/float64(max(total, 1)), k)
	}
	return b.String()
}
