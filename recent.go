// Two-generation memories: the default Deduper, and the generations type
// it shares with MemoryAgreements.

package duplex

import (
	"context"
	"sync"
)

// generations remembers roughly the last 2*half keys put: it keeps two
// generations of half keys and drops the older one when the newer is
// full, which costs no per-key eviction work. It is not safe for
// concurrent use.
type generations[V any] struct {
	cur, old map[string]V
	half     int
}

func newGenerations[V any](capacity int) generations[V] {
	h := max(capacity/2, 1)
	return generations[V]{cur: make(map[string]V, h), half: h}
}

func (g *generations[V]) get(k string) (V, bool) {
	v, ok := g.cur[k]
	if !ok {
		v, ok = g.old[k]
	}
	return v, ok
}

func (g *generations[V]) put(k string, v V) {
	if _, ok := g.cur[k]; !ok && len(g.cur) >= g.half {
		g.old, g.cur = g.cur, make(map[string]V, g.half)
	}
	g.cur[k] = v
	delete(g.old, k)
}

func (g *generations[V]) empty() bool { return len(g.cur) == 0 && len(g.old) == 0 }

// recentIDs is the default Deduper: roughly the last n marked IDs, in
// memory.
type recentIDs struct {
	mu  sync.Mutex
	ids generations[struct{}]
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{ids: newGenerations[struct{}](n)}
}

func (r *recentIDs) Seen(_ context.Context, ids []string) ([]bool, error) {
	out := make([]bool, len(ids))
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids.empty() {
		return out, nil
	}
	for i, id := range ids {
		_, out[i] = r.ids.get(id)
	}
	return out, nil
}

func (r *recentIDs) Mark(_ context.Context, ids []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		r.ids.put(id, struct{}{})
	}
	return nil
}
