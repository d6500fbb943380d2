package loopguard

import (
	"container/list"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
)

// DefaultCapacity is the number of rows a [Hashes] remembers when
// HashesConfig.Capacity is zero.
const DefaultCapacity = 100_000

// MaxPending is the most hashes a [Hashes] keeps for one row: the states
// of the row the sync wrote whose echoes have not arrived yet. When the
// sync writes a row more often than that before its echoes come back, the
// oldest are forgotten (their echoes then pass).
const MaxPending = 8

// HashesConfig configures a [Hashes].
type HashesConfig struct {
	// Capacity is the most rows remembered; when full, remembering another
	// forgets the least recently written one. 0: DefaultCapacity.
	Capacity int
	// TTL is how long a remembered row state waits for its echo. It should
	// exceed the time the source takes to capture a write (the polling
	// interval plus some), and be short, since it is also how long a user's
	// change that makes the row identical to the sync's write can be taken
	// for the echo. 0: no expiry (not recommended).
	TTL time.Duration
	// Now returns the current time, for tests. nil: time.Now.
	Now func() time.Time
}

// Hashes is a [duplex.LoopGuard] for sources that cannot tell the sync's
// writes from users' (polling, APIs): it recognises an echo by content.
//
// Remember records the state the sync left a row in, as a canonical hash
// (see [Hash]); [Remembering] calls it after each successful apply. Echo
// then reports whether an incoming change's resulting row (its After, or
// no row for a delete) has a remembered hash for its table and key. A
// recognised echo consumes that hash, and the older ones of the same row
// (the source has moved past them), so a later change to the same values
// is not dropped for ever. A change that matches nothing is a user's: it
// passes, and the row's remembered states are forgotten, as superseded.
//
// When in doubt Hashes lets a change pass, because the two ways of being
// wrong differ: an echo that passes goes back to the other side, which
// finds the values it already has (or, if it changed the row meanwhile, a
// conflict, decided as usual), while a user's change taken for an echo is
// lost. What remains:
//
//   - A user's change that leaves a row exactly as the sync wrote it is
//     taken for the echo when it arrives while that state is remembered:
//     before the echo itself, or instead of it when the source never
//     reports the echo separately (a poll that sees only the later state).
//     The row is then as the sync left it, which the other side holds too,
//     so the two sides agree, unless the other side changed the row again
//     meanwhile. A short TTL keeps the window small.
//   - An echo passes when its hash was forgotten: after the TTL, beyond
//     Capacity or MaxPending, or after a user's change to the row was seen
//     first (a user's write committed just before the sync's but delivered
//     after it was remembered, or one between two writes of the sync); and
//     when its resulting row is incomplete (unchanged TOAST columns), or the
//     source decodes values differently from the Applier's Lookup.
//
// Where the source reports replication origins, use [Origins] instead. A
// Hashes is safe for concurrent use; Remember and Echo cost O(1) per row
// (plus hashing). Echo waits while a write to the change's row is going
// through Remembering (its echo may have been captured before the write is
// remembered), and fails only when ctx ends meanwhile.
type Hashes struct {
	capacity int
	ttl      time.Duration
	now      func() time.Time

	mu       sync.Mutex
	rows     map[string]*list.Element // of *rowState; front: most recently written
	lru      *list.List
	inflight map[string]int // rows being written through Remembering
	wake     chan struct{}  // closed and replaced when an in-flight write ends
}

type rowState struct {
	key    string
	sums   []Sum       // oldest first
	stamps []time.Time // when each sum was remembered
	fields [][]string  // the fields the sync wrote to reach each sum; nil: unknown
}

var _ duplex.LoopGuard = (*Hashes)(nil)

// NewHashes returns an empty Hashes.
func NewHashes(cfg HashesConfig) *Hashes {
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultCapacity
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Hashes{
		capacity: cfg.Capacity,
		ttl:      max(cfg.TTL, 0),
		now:      cfg.Now,
		rows:     make(map[string]*list.Element),
		lru:      list.New(),
		inflight: make(map[string]int),
		wake:     make(chan struct{}),
	}
}

func rowKey(table duplex.Table, key duplex.Key) string {
	return table.String() + "\x00" + key.String()
}

// tableKey is where a TRUNCATE of table is remembered; no row key is empty.
func tableKey(table duplex.Table) string { return table.String() + "\x00" }

// truncated is the state a TRUNCATE leaves a table in.
var truncated = Sum{'T', 'R', 'U', 'N', 'C', 'A', 'T', 'E'}

// Remember records that the sync left the row of table and key as row; a
// nil row means the sync deleted it. row must be the whole row as the
// source will report it (every column, decoded the same way). The same
// state remembered twice in a row expects a single echo.
func (h *Hashes) Remember(table duplex.Table, key duplex.Key, row duplex.Values) {
	h.remember(rowKey(table, key), Hash(row), nil)
}

// RememberWrite is Remember for a write that set only fields (an update):
// a change leaving the row in that state is an echo only if every field it
// changed (before image against after image) is one of them, so that a
// user's edit of another field, made just before the sync's write and
// captured together with it (a polling source sees both at once), is not
// taken for the sync's.
func (h *Hashes) RememberWrite(table duplex.Table, key duplex.Key, row duplex.Values, fields []string) {
	h.remember(rowKey(table, key), Hash(row), fields)
}

func (h *Hashes) remember(k string, sum Sum, fields []string) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if el, ok := h.rows[k]; ok {
		st := el.Value.(*rowState)
		h.prune(st, now)
		if n := len(st.sums); n > 0 && st.sums[n-1] == sum {
			st.stamps[n-1] = now // the same state written again: one echo at most
			st.fields[n-1] = unionFields(st.fields[n-1], fields)
		} else {
			if n == MaxPending {
				st.sums, st.stamps, st.fields = st.sums[1:], st.stamps[1:], st.fields[1:]
			}
			st.sums = append(st.sums, sum)
			st.stamps = append(st.stamps, now)
			st.fields = append(st.fields, fields)
		}
		h.lru.MoveToFront(el)
		return
	}
	for h.lru.Len() >= h.capacity {
		h.drop(h.lru.Back())
	}
	h.rows[k] = h.lru.PushFront(&rowState{key: k, sums: []Sum{sum}, stamps: []time.Time{now}, fields: [][]string{fields}})
}

// unionFields merges two written-field sets; nil (unknown: any field) wins.
func unionFields(a, b []string) []string {
	if a == nil || b == nil {
		return nil
	}
	out := slices.Clone(a)
	for _, f := range b {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// changedOnly reports whether c changed no field outside fields (nil: any
// field may have changed). Without a before image it cannot tell, and
// trusts the hash.
func changedOnly(c *duplex.Change, fields []string) bool {
	if fields == nil || c.Op != duplex.OpUpdate || c.Before == nil {
		return true
	}
	for f, v := range c.After {
		if b, ok := c.Before[f]; (!ok || !duplex.Equal(b, v)) && !slices.Contains(fields, f) {
			return false
		}
	}
	return true
}

// Echo implements [duplex.LoopGuard]: it reports whether c leaves its row
// in a state the sync wrote and whose echo has not been seen yet, and if so
// consumes that state. A TRUNCATE is an echo when it follows one the sync
// made through Remembering.
func (h *Hashes) Echo(ctx context.Context, c *duplex.Change) (bool, error) {
	var row duplex.Values
	k := rowKey(c.Table, c.Key)
	switch c.Op {
	case duplex.OpDelete:
	case duplex.OpInsert, duplex.OpUpdate:
		if c.After == nil || len(c.Unchanged) > 0 {
			return false, nil // the resulting row is not fully known
		}
		row = c.After
	case duplex.OpTruncate:
		k = tableKey(c.Table)
	default:
		return false, nil
	}
	h.mu.Lock()
	// A write through Remembering may have committed without being
	// remembered yet: its echo can only be judged once it is.
	for h.inflight[k] > 0 {
		wake := h.wake
		h.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		h.mu.Lock()
	}
	el, ok := h.rows[k]
	h.mu.Unlock()
	if !ok {
		return false, nil // the common case: no hashing
	}
	sum := truncated
	if c.Op != duplex.OpTruncate {
		sum = Hash(row)
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if el, ok = h.rows[k]; !ok {
		return false, nil
	}
	st := el.Value.(*rowState)
	h.prune(st, now)
	for i, s := range st.sums {
		if s == sum {
			if !changedOnly(c, st.fields[i]) {
				break // the sync's write and a user's edit of another field, captured together
			}
			st.sums, st.stamps, st.fields = st.sums[i+1:], st.stamps[i+1:], st.fields[i+1:]
			if len(st.sums) == 0 {
				h.drop(el)
			}
			return true, nil
		}
	}
	// A user's change: whatever the sync wrote before is superseded.
	h.drop(el)
	return false, nil
}

// begin records that rows are being written through Remembering; Echo on
// them waits until end.
func (h *Hashes) begin(keys []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range keys {
		h.inflight[k]++
	}
}

func (h *Hashes) end(keys []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range keys {
		if h.inflight[k]--; h.inflight[k] <= 0 {
			delete(h.inflight, k)
		}
	}
	close(h.wake)
	h.wake = make(chan struct{})
}

// Len returns the number of rows with remembered states.
func (h *Hashes) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lru.Len()
}

// prune drops st's expired states.
func (h *Hashes) prune(st *rowState, now time.Time) {
	if h.ttl == 0 {
		return
	}
	i := 0
	for i < len(st.stamps) && now.Sub(st.stamps[i]) >= h.ttl {
		i++
	}
	st.sums, st.stamps, st.fields = st.sums[i:], st.stamps[i:], st.fields[i:]
}

func (h *Hashes) drop(el *list.Element) {
	delete(h.rows, el.Value.(*rowState).key)
	h.lru.Remove(el)
}
