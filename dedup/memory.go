package dedup

import (
	"context"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
)

// DefaultCapacity is the number of ids a [Memory] remembers when
// MemoryConfig.Capacity is zero.
const DefaultCapacity = 100_000

// MemoryConfig configures a [Memory].
type MemoryConfig struct {
	// Capacity is the most ids remembered; when full, marking a new id
	// forgets the least recently used one (marked or found by Seen).
	// 0: DefaultCapacity.
	Capacity int
	// TTL is how long a mark lasts, counted from the id's last Mark (Seen
	// does not extend it). 0: marks never expire.
	TTL time.Duration
	// Now returns the current time, for tests. nil: time.Now.
	Now func() time.Time
}

// Memory is a bounded in-memory [duplex.Deduper]: a hash map over an
// intrusive doubly linked list kept in least-recently-used order, so Seen
// and Mark cost O(1) per id. It is safe for concurrent use. Its marks are
// lost with the process; use it alone only where a redundant apply after a
// restart is acceptable (it always is for correctness, see the package
// documentation).
type Memory struct {
	capacity int
	ttl      time.Duration
	now      func() time.Time

	mu    sync.Mutex
	index map[string]int32 // id -> slot in nodes
	nodes []node           // grows up to capacity; slots are reused
	head  int32            // most recently used, or nilSlot
	tail  int32            // least recently used, or nilSlot
	free  int32            // first free slot (linked through next), or nilSlot
}

type node struct {
	id         string
	marked     int64 // unix nanoseconds of the last Mark; used only with a TTL
	prev, next int32
}

const nilSlot = -1

var _ duplex.Deduper = (*Memory)(nil)

// NewMemory returns an empty Memory. A negative Capacity or TTL is treated
// as zero (the default).
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultCapacity
	}
	// Slots are int32 to halve the list's memory; nobody needs 2^31 ids in
	// one process.
	cfg.Capacity = min(cfg.Capacity, 1<<31-1)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{
		capacity: cfg.Capacity,
		ttl:      max(cfg.TTL, 0),
		now:      cfg.Now,
		index:    make(map[string]int32),
		head:     nilSlot,
		tail:     nilSlot,
		free:     nilSlot,
	}
}

// Seen implements [duplex.Deduper]: answers[i] reports whether ids[i] is
// marked and not expired. A hit counts as a use for the LRU order; Seen
// never marks and never extends a TTL. It returns ctx.Err() when ctx is
// already done.
func (m *Memory) Seen(ctx context.Context, ids []string) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	var now int64
	if m.ttl > 0 {
		now = m.now().UnixNano()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, id := range ids {
		s, ok := m.index[id]
		if !ok {
			continue
		}
		if m.expired(s, now) {
			m.remove(s)
			continue
		}
		m.moveToFront(s)
		out[i] = true
	}
	return out, nil
}

// Mark implements [duplex.Deduper]: it records ids as settled, restarting
// their TTL, and makes them the most recently used. Marking an id again is
// not an error. It returns ctx.Err() when ctx is already done, marking
// nothing.
func (m *Memory) Mark(ctx context.Context, ids []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	var now int64
	if m.ttl > 0 {
		now = m.now().UnixNano()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		if s, ok := m.index[id]; ok {
			m.nodes[s].marked = now
			m.moveToFront(s)
			continue
		}
		// Expired ids at the cold end go first: they free space without
		// forgetting anything still valid.
		for m.tail != nilSlot && m.expired(m.tail, now) {
			m.remove(m.tail)
		}
		if len(m.index) >= m.capacity {
			m.remove(m.tail)
		}
		s := m.alloc()
		m.nodes[s] = node{id: id, marked: now, prev: nilSlot, next: nilSlot}
		m.index[id] = s
		m.pushFront(s)
	}
	return nil
}

// Len returns the number of ids remembered, expired ones not yet dropped
// included.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.index)
}

func (m *Memory) expired(s int32, now int64) bool {
	return m.ttl > 0 && now-m.nodes[s].marked >= int64(m.ttl)
}

func (m *Memory) alloc() int32 {
	if m.free != nilSlot {
		s := m.free
		m.free = m.nodes[s].next
		return s
	}
	m.nodes = append(m.nodes, node{})
	return int32(len(m.nodes) - 1)
}

func (m *Memory) remove(s int32) {
	m.unlink(s)
	delete(m.index, m.nodes[s].id)
	m.nodes[s] = node{prev: nilSlot, next: m.free}
	m.free = s
}

func (m *Memory) unlink(s int32) {
	n := &m.nodes[s]
	if n.prev != nilSlot {
		m.nodes[n.prev].next = n.next
	} else {
		m.head = n.next
	}
	if n.next != nilSlot {
		m.nodes[n.next].prev = n.prev
	} else {
		m.tail = n.prev
	}
	n.prev, n.next = nilSlot, nilSlot
}

func (m *Memory) pushFront(s int32) {
	n := &m.nodes[s]
	n.prev, n.next = nilSlot, m.head
	if m.head != nilSlot {
		m.nodes[m.head].prev = s
	}
	m.head = s
	if m.tail == nilSlot {
		m.tail = s
	}
}

func (m *Memory) moveToFront(s int32) {
	if m.head == s {
		return
	}
	m.unlink(s)
	m.pushFront(s)
}
