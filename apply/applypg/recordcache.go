package applypg

import (
	"slices"
	"sync"

	"github.com/duplexsync/duplex"
)

// recordCacheSize is how many keys' agreement records an Applier keeps in
// memory (two generations of half each).
const recordCacheSize = 32768

// recordCache holds the agreement records an Applier committed last, per
// table and key. The records of a sync and system are written only through
// its Applier (the sync's lock keeps a second instance out), so a record it
// committed stays the table's until it commits another: a merge reading
// the keys it wrote lately needs no records query for them. A batch whose
// outcome is unknown drops its keys. Safe for concurrent use.
type recordCache struct {
	mu       sync.Mutex
	half     int
	cur, old map[recordKey]duplex.Agreement
}

type recordKey struct {
	table duplex.Table
	key   string
}

func newRecordCache(size int) *recordCache {
	h := max(size/2, 1)
	return &recordCache{half: h, cur: make(map[recordKey]duplex.Agreement, h)}
}

// get fills recs with the cached records of keys of t and returns the
// indexes of the keys it does not hold.
func (c *recordCache) get(t duplex.Table, keys []duplex.Key, recs []duplex.Agreement) (miss []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range keys {
		rk := recordKey{t, k.String()}
		a, ok := c.cur[rk]
		if !ok {
			if a, ok = c.old[rk]; ok {
				c.putLocked(rk, a)
			}
		}
		if !ok {
			miss = append(miss, i)
			continue
		}
		recs[i] = cloneAgreement(a)
	}
	return miss
}

// put records what a committed batch wrote: its records, and "none" for
// the keys whose records it removed.
func (c *recordCache) put(ws []duplex.AgreementWrite) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range ws {
		a := duplex.Agreement{}
		if w.Agreement.Known {
			a = cloneAgreement(w.Agreement)
		}
		c.putLocked(recordKey{w.Table, w.Key.String()}, a)
	}
}

// drop forgets the keys of ws (a batch that failed, perhaps after its
// commit).
func (c *recordCache) drop(ws []duplex.AgreementWrite) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range ws {
		rk := recordKey{w.Table, w.Key.String()}
		delete(c.cur, rk)
		delete(c.old, rk)
	}
}

func (c *recordCache) putLocked(rk recordKey, a duplex.Agreement) {
	if _, ok := c.cur[rk]; !ok && len(c.cur) >= c.half {
		c.old, c.cur = c.cur, make(map[recordKey]duplex.Agreement, c.half)
	}
	c.cur[rk] = a
	delete(c.old, rk)
}

// cloneAgreement returns a copy of a whose rows and field list the caller
// may change.
func cloneAgreement(a duplex.Agreement) duplex.Agreement {
	a.Row, a.Peer, a.Unknown = a.Row.Clone(), a.Peer.Clone(), slices.Clone(a.Unknown)
	return a
}
