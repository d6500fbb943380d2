package dlq

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
)

// MemoryConfig configures a [Memory].
type MemoryConfig struct {
	// Now returns the current time, for tests. nil: time.Now.
	Now func() time.Time
}

// Memory is an in-memory dead-letter queue: a [duplex.DeadLetterSink] and a
// [Store]. It is safe for concurrent use. It is not durable, so it suits
// tests, examples and syncs whose dead letters are also logged elsewhere;
// Put returning nil only means the entry is in this process's memory.
type Memory struct {
	now func() time.Time

	mu       sync.RWMutex
	entries  []*Entry         // entries[i].ID == i+1
	byChange map[string]int64 // identity -> ID
	byRow    map[string]int64 // RowIdentity -> ID of its pending entry
}

var (
	_ duplex.DeadLetterSink = (*Memory)(nil)
	_ Store                 = (*Memory)(nil)
)

// NewMemory returns an empty Memory.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{now: cfg.Now, byChange: make(map[string]int64), byRow: make(map[string]int64)}
}

// identity is what makes two puts the same entry. Changes without an ID
// cannot be recognised and always make a new entry.
func identity(l *duplex.DeadLetter) string {
	if l.Change.ID == "" {
		return ""
	}
	return l.Sync + "\x00" + l.Direction.From + "\x00" + l.Direction.To + "\x00" + l.Change.ID
}

// Put implements [duplex.DeadLetterSink]. It stores a deep copy of l. A
// change put again (same Sync, Direction and Change.ID) updates its entry
// and makes it pending again; a row held by a two-way merge that has a
// pending entry (same RowIdentity) updates that entry (see Absorb).
func (m *Memory) Put(ctx context.Context, l *duplex.DeadLetter) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l == nil {
		return errors.New("dlq: Put of a nil dead letter")
	}
	now := m.now()
	key, row := identity(l), RowIdentity(l)

	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.byChange[key]
	if !ok || key == "" {
		id, ok = m.byRow[row]
		if ok && (row == "" || m.entries[id-1].Status != StatusPending) {
			ok = false
		}
	}
	if ok {
		e := m.entries[id-1]
		old := identity(&e.DeadLetter)
		Absorb(e, l, now)
		if k := identity(&e.DeadLetter); k != old {
			delete(m.byChange, old)
			if k != "" {
				m.byChange[k] = e.ID
			}
		}
		if row != "" {
			m.byRow[row] = e.ID
		}
		return nil
	}
	ne := NewEntry(l, now)
	e := &ne
	e.ID = int64(len(m.entries) + 1)
	m.entries = append(m.entries, e)
	if key != "" {
		m.byChange[key] = e.ID
	}
	if row != "" {
		m.byRow[row] = e.ID
	}
	return nil
}

// List implements [Store].
func (m *Memory) List(ctx context.Context, f Filter) ([]Entry, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	skip := max(f.Offset, 0)

	m.mu.RLock()
	defer m.mu.RUnlock()
	n := len(m.entries)
	out := []Entry{}
	total := 0
	for i := range n {
		e := m.entries[n-1-i]
		if f.OldestFirst {
			e = m.entries[i]
		}
		if !f.Match(e) {
			continue
		}
		total++
		if f.After != 0 && (f.OldestFirst && e.ID <= f.After || !f.OldestFirst && e.ID >= f.After) {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		if len(out) < limit {
			out = append(out, copyEntry(e))
		}
	}
	return out, total, nil
}

// Get implements [Store].
func (m *Memory) Get(ctx context.Context, id int64) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, err := m.get(id)
	if err != nil {
		return Entry{}, err
	}
	return copyEntry(e), nil
}

func (m *Memory) get(id int64) (*Entry, error) {
	if id < 1 || id > int64(len(m.entries)) {
		return nil, &NotFoundError{ID: id}
	}
	return m.entries[id-1], nil
}

// SetStatus implements [Store].
func (m *Memory) SetStatus(ctx context.Context, id int64, from []Status, to Status, by, resolution string) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	if err := CheckTransition(from, to); err != nil {
		return Entry{}, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.get(id)
	if err != nil {
		return Entry{}, err
	}
	switch {
	case e.Status == to:
		// Already done (by this caller's earlier click, or someone else's).
	case len(from) == 0 || slices.Contains(from, e.Status):
		e.Status = to
		e.ResolvedBy = by
		e.Resolution = resolution
		e.UpdatedAt = now
	default:
		return Entry{}, &TransitionError{ID: id, Status: e.Status, From: slices.Clone(from), To: to}
	}
	return copyEntry(e), nil
}

// Depth implements [Store].
func (m *Memory) Depth(ctx context.Context) ([]DepthRow, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type group struct{ sync, dir, table, reason string }
	counts := map[group]*DepthRow{}
	m.mu.RLock()
	for _, e := range m.entries {
		if e.Status != StatusPending {
			continue
		}
		g := group{e.Sync, e.Direction.String(), e.Change.Table.String(), string(e.Reason)}
		r := counts[g]
		if r == nil {
			r = &DepthRow{Sync: g.sync, Direction: g.dir, Table: g.table, Reason: g.reason, Oldest: e.FirstSeen}
			counts[g] = r
		}
		r.Count++
		if e.FirstSeen.Before(r.Oldest) {
			r.Oldest = e.FirstSeen
		}
	}
	m.mu.RUnlock()
	out := make([]DepthRow, 0, len(counts))
	for _, r := range counts {
		out = append(out, *r)
	}
	slices.SortFunc(out, compareDepth)
	return out, nil
}

func compareDepth(a, b DepthRow) int {
	return cmp.Or(cmp.Compare(a.Sync, b.Sync), cmp.Compare(a.Direction, b.Direction),
		cmp.Compare(a.Table, b.Table), cmp.Compare(a.Reason, b.Reason))
}

// PendingForKey implements [Store].
func (m *Memory) PendingForKey(ctx context.Context, direction duplex.Direction, table duplex.Table, key string) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := []Entry{}
	m.mu.RLock()
	for _, e := range m.entries {
		if e.Status == StatusPending && e.Direction == direction && e.Change.Table == table && e.Change.Key.String() == key {
			out = append(out, copyEntry(e))
		}
	}
	m.mu.RUnlock()
	slices.SortStableFunc(out, func(a, b Entry) int {
		return cmp.Or(a.FirstSeen.Compare(b.FirstSeen), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

func copyEntry(e *Entry) Entry {
	c := *e
	c.DeadLetter = copyDeadLetter(&e.DeadLetter)
	if e.History != nil {
		c.History = make([]Version, len(e.History))
		for i, v := range e.History {
			c.History[i] = v
			c.History[i].Source, c.History[i].Target = copyValues(v.Source), copyValues(v.Target)
		}
	}
	return c
}
