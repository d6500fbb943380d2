package duplex

import (
	"context"
	"hash/maphash"
	"slices"
	"sync"
)

// Agreement is what a two-way sync remembers about one row after merging
// it: the row both systems held when the merge finished. It is the merge
// base of the next merge of that key: a system changed a field if its
// current value differs from the agreed one.
type Agreement struct {
	// Known is false when nothing is remembered for the key; the merge then
	// falls back on the triggering change's before image.
	Known bool
	// Row is the agreed row; nil (with Known) means both systems agreed the
	// row does not exist.
	Row Values
	// Torn marks a merge whose result may have reached one system only (the
	// other changed in between, could not be written, or the process died
	// between the two writes): Row is then the agreement before that merge.
	// The next merge of the key tells the resolvers (Conflict.BaseUncertain),
	// so that one adding counter deltas does not count a side twice; a
	// completed merge clears it.
	Torn bool
}

// AgreementStore keeps the Agreement of each key of a two-way sync. Both
// directions of a Sync share one. Load returns the agreements of keys, in
// their order (the zero Agreement for unknown keys); Save records them.
// Both must be safe for concurrent use. A store may forget keys (a bounded
// memory): a forgotten key is merged against the triggering change's before
// image, which is exact unless changes crossed in flight.
type AgreementStore interface {
	Load(ctx context.Context, table Table, keys []Key) ([]Agreement, error)
	Save(ctx context.Context, table Table, keys []Key, agreements []Agreement) error
}

// MemoryAgreements is an in-process AgreementStore that remembers the last
// agreements of about capacity keys (the default of a Sync). Agreements are
// lost on restart: the first merge of a key after it uses the before image.
type MemoryAgreements struct {
	mu       sync.Mutex
	cur, old map[string]Agreement
	half     int
}

// NewMemoryAgreements returns a MemoryAgreements for about capacity keys
// (at least 2). It keeps two generations of capacity/2 keys and drops the
// older when the newer is full.
func NewMemoryAgreements(capacity int) *MemoryAgreements {
	h := max(capacity/2, 1)
	return &MemoryAgreements{cur: make(map[string]Agreement), half: h}
}

func agreementKey(t Table, k Key) string { return t.String() + "\x00" + k.String() }

// Load implements AgreementStore.
func (m *MemoryAgreements) Load(_ context.Context, t Table, keys []Key) ([]Agreement, error) {
	out := make([]Agreement, len(keys))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range keys {
		name := agreementKey(t, k)
		a, ok := m.cur[name]
		if !ok {
			a, ok = m.old[name]
		}
		if ok {
			a.Row = a.Row.Clone()
			out[i] = a
		}
	}
	return out, nil
}

// Save implements AgreementStore.
func (m *MemoryAgreements) Save(_ context.Context, t Table, keys []Key, as []Agreement) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range keys {
		name := agreementKey(t, k)
		if _, ok := m.cur[name]; !ok && len(m.cur) >= m.half {
			m.old, m.cur = m.cur, make(map[string]Agreement, m.half)
		}
		a := as[i]
		a.Row = a.Row.Clone()
		m.cur[name] = a
		delete(m.old, name)
	}
	return nil
}

// keyLocks serialises the merges of a key across the two directions of a
// Sync: a fixed set of stripes, locked in index order so two chunks can
// never wait on each other in a cycle.
type keyLocks struct {
	seed    maphash.Seed
	stripes [256]sync.Mutex
}

func newKeyLocks() *keyLocks { return &keyLocks{seed: maphash.MakeSeed()} }

// lock locks the stripes of names and returns the function that unlocks them.
func (l *keyLocks) lock(names []string) func() {
	idx := make([]int, 0, len(names))
	for _, n := range names {
		idx = append(idx, int(maphash.String(l.seed, n)%uint64(len(l.stripes))))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		l.stripes[i].Lock()
	}
	return func() {
		for _, i := range slices.Backward(idx) {
			l.stripes[i].Unlock()
		}
	}
}
