package duplex

import (
	"context"
	"sync"
)

// recentIDs is the default Deduper: the last n marked IDs, in memory.
type recentIDs struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string
	next int
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{set: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (r *recentIDs) Seen(_ context.Context, ids []string) ([]bool, error) {
	out := make([]bool, len(ids))
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.set) == 0 {
		return out, nil
	}
	for i, id := range ids {
		_, out[i] = r.set[id]
	}
	return out, nil
}

func (r *recentIDs) Mark(_ context.Context, ids []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if _, ok := r.set[id]; ok {
			continue
		}
		if old := r.ring[r.next]; old != "" {
			delete(r.set, old)
		}
		r.ring[r.next] = id
		r.set[id] = struct{}{}
		r.next = (r.next + 1) % len(r.ring)
	}
	return nil
}
