package duplex

import (
	"context"
	"sync"
)

// recentIDs is the default Deduper: roughly the last n marked IDs, in
// memory. It keeps two generations of n/2 IDs and drops the older one when
// the newer is full, which costs no per-ID eviction work.
type recentIDs struct {
	mu       sync.Mutex
	cur, old map[string]struct{}
	half     int
}

func newRecentIDs(n int) *recentIDs {
	h := max(n/2, 1)
	return &recentIDs{cur: make(map[string]struct{}, h), half: h}
}

func (r *recentIDs) Seen(_ context.Context, ids []string) ([]bool, error) {
	out := make([]bool, len(ids))
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cur) == 0 && len(r.old) == 0 {
		return out, nil
	}
	for i, id := range ids {
		if _, ok := r.cur[id]; ok {
			out[i] = true
		} else if _, ok := r.old[id]; ok {
			out[i] = true
		}
	}
	return out, nil
}

func (r *recentIDs) Mark(_ context.Context, ids []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if len(r.cur) >= r.half {
			r.old, r.cur = r.cur, make(map[string]struct{}, r.half)
		}
		r.cur[id] = struct{}{}
	}
	return nil
}
