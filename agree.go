// Agreements: each system's record of what the two systems last agreed on a key, the
// interfaces that store them with the write, and the key locks both directions share.

package duplex

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Agreement is one system's record of what the two systems of a Sync agreed
// on for one key: the merge base of the next merge. Each system keeps its
// own record, written in the same transaction as the write the merge made
// on that system (see AgreementKeeper), so a record never describes a write
// that did not commit, nor misses one that did.
//
// A merge that changes anything writes a record with a new Version to both
// systems, the target first. When only one of the two commits (a crash in
// between, a write-back refused because the source changed meanwhile), the
// records' versions differ, and the newer record's Peer is exactly what the
// merge took from the lagging system: the next merge uses it as the base,
// so the lagging system's later edits count as its own, and what the merge
// already decided counts as the other side's.
type Agreement struct {
	// Known is false when the system holds no record of the key.
	Known bool
	// Version numbers the merges of the key across both systems; a merge
	// writes one more than the larger version it found.
	Version uint64
	// Row is the agreed row; nil (with Known) means both systems agreed the
	// row does not exist.
	Row Values
	// Peer is the other system's row as the merge that wrote this record
	// read it and took it in (nil: the other system had no row). It is the
	// merge base when the other system's record is older.
	Peer Values
	// Unknown lists the fields whose agreed value is not known (a field
	// both sides changed while no base was known, and which nobody decided);
	// Row and Peer omit them, and the next merge treats them as changed on
	// both sides unless both hold the same value.
	Unknown []string
}

// AgreementWrite is one Agreement an Applier records with a Batch.
type AgreementWrite struct {
	Table     Table
	Key       Key
	Agreement Agreement
}

// AgreementKeeper is implemented by Appliers that keep the agreement records
// of their system: Apply writes Batch.Agreements in the same transaction as
// Batch.Writes (the last record of a key given twice wins), and Agreements
// reads them back, in the order of keys (the zero Agreement for keys
// without a record). Records are per Applier's sync and system.
type AgreementKeeper interface {
	Agreements(ctx context.Context, table Table, keys []Key) ([]Agreement, error)
}

// AgreedLookup is implemented by AgreementKeepers that read rows (as
// Lookup) and their agreement records (as Agreements) together, in one
// round trip: a two-way merge then reads each system once per chunk.
type AgreedLookup interface {
	LookupAgreements(ctx context.Context, table Table, keys []Key) ([]Values, []Agreement, error)
}

// AgreementStore keeps agreement records apart from the system's own
// transactions, for an Endpoint whose Applier is not an AgreementKeeper.
// Load returns the records of keys, in their order (the zero Agreement for
// unknown keys); Save records them. Both must be safe for concurrent use.
// Records then commit after the writes they describe: a crash in between
// leaves a write without its record, which the next merge takes for an
// edit of that system (see docs/two-way-merge.md).
type AgreementStore interface {
	Load(ctx context.Context, table Table, keys []Key) ([]Agreement, error)
	Save(ctx context.Context, table Table, keys []Key, agreements []Agreement) error
}

// records writes batches to one system of a two-way Pipeline with their
// agreement records, and reads the records back.
type records interface {
	load(ctx context.Context, t Table, keys []Key) ([]Agreement, error)
	Lookup(ctx context.Context, t Table, keys []Key) ([]Values, error)
	// read returns the rows of keys and their records.
	read(ctx context.Context, t Table, keys []Key) ([]Values, []Agreement, error)
	apply(ctx context.Context, b *Batch) error
}

// recordsOf returns the records of the system a writes: a's own when it
// is an AgreementKeeper, else store's (nil: a MemoryAgreements).
func recordsOf(a Applier, store AgreementStore) records {
	if k, ok := a.(AgreementKeeper); ok {
		return keptRecords{a, k}
	}
	if store == nil {
		store = NewMemoryAgreements(1 << 16)
	}
	return storedRecords{a, store}
}

// keptRecords are kept by the Applier, in the transaction of the writes.
type keptRecords struct {
	Applier
	keeper AgreementKeeper
}

func (r keptRecords) load(ctx context.Context, t Table, keys []Key) ([]Agreement, error) {
	return r.keeper.Agreements(ctx, t, keys)
}

func (r keptRecords) read(ctx context.Context, t Table, keys []Key) ([]Values, []Agreement, error) {
	if l, ok := r.keeper.(AgreedLookup); ok {
		return l.LookupAgreements(ctx, t, keys)
	}
	return readApart(ctx, r, t, keys)
}

func (r keptRecords) apply(ctx context.Context, b *Batch) error { return r.Apply(ctx, b) }

// readApart reads the rows of keys, then their records.
func readApart(ctx context.Context, r records, t Table, keys []Key) ([]Values, []Agreement, error) {
	vals, err := r.Lookup(ctx, t, keys)
	if err != nil {
		return nil, nil, err
	}
	ags, err := r.load(ctx, t, keys)
	return vals, ags, err
}

// storedRecords are kept in an AgreementStore, saved once the writes
// committed.
type storedRecords struct {
	Applier
	store AgreementStore
}

func (r storedRecords) load(ctx context.Context, t Table, keys []Key) ([]Agreement, error) {
	return r.store.Load(ctx, t, keys)
}

func (r storedRecords) read(ctx context.Context, t Table, keys []Key) ([]Values, []Agreement, error) {
	return readApart(ctx, r, t, keys)
}

func (r storedRecords) apply(ctx context.Context, b *Batch) error {
	if len(b.Writes) > 0 || b.Checkpoint != "" {
		if err := r.Apply(ctx, b); err != nil {
			return err
		}
	}
	byTable := map[Table]*tableAgreements{}
	var order []Table
	for _, w := range b.Agreements {
		ta := byTable[w.Table]
		if ta == nil {
			ta = &tableAgreements{}
			byTable[w.Table] = ta
			order = append(order, w.Table)
		}
		ta.keys = append(ta.keys, w.Key)
		ta.as = append(ta.as, w.Agreement)
	}
	for _, t := range order {
		ta := byTable[t]
		if err := r.store.Save(ctx, t, ta.keys, ta.as); err != nil {
			return fmt.Errorf("duplex: save %d agreed rows of %s: %w", len(ta.keys), t, err)
		}
	}
	return nil
}

type tableAgreements struct {
	keys []Key
	as   []Agreement
}

// MemoryAgreements is an in-process AgreementStore that remembers the
// records of about capacity keys. Records are lost on restart and when the
// store forgets a key; the first merge of such a key has no base (see
// docs/two-way-merge.md, "an unknown base").
type MemoryAgreements struct {
	mu   sync.Mutex
	recs generations[Agreement]
}

// NewMemoryAgreements returns a MemoryAgreements for about capacity keys
// (at least 2). It keeps two generations of capacity/2 keys and drops the
// older when the newer is full.
func NewMemoryAgreements(capacity int) *MemoryAgreements {
	return &MemoryAgreements{recs: newGenerations[Agreement](capacity)}
}

func agreementKey(t Table, k Key) string { return t.String() + "\x00" + k.String() }

// Load implements AgreementStore.
func (m *MemoryAgreements) Load(_ context.Context, t Table, keys []Key) ([]Agreement, error) {
	out := make([]Agreement, len(keys))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range keys {
		if a, ok := m.recs.get(agreementKey(t, k)); ok {
			out[i] = a.Clone()
		}
	}
	return out, nil
}

// Save implements AgreementStore.
func (m *MemoryAgreements) Save(_ context.Context, t Table, keys []Key, as []Agreement) error {
	if len(keys) != len(as) {
		return Permanent(fmt.Errorf("duplex: save %d keys of %s with %d agreements", len(keys), t, len(as)))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range keys {
		m.recs.put(agreementKey(t, k), as[i].Clone())
	}
	return nil
}

// Clone returns a copy of a that shares no map or slice with it.
func (a Agreement) Clone() Agreement {
	a.Row, a.Peer = a.Row.Clone(), a.Peer.Clone()
	a.Unknown = slices.Clone(a.Unknown)
	return a
}

// keyLocks serialises the merges of a key across the two directions of a
// Sync (and the operator actions): a chunk takes all its keys at once, or
// waits until none of them is held, so two chunks never wait on each other
// in a cycle, and chunks of different keys never wait at all.
type keyLocks struct {
	mu   sync.Mutex
	free *sync.Cond // signalled when keys are released
	held map[string]struct{}
}

func newKeyLocks() *keyLocks {
	l := &keyLocks{held: make(map[string]struct{})}
	l.free = sync.NewCond(&l.mu)
	return l
}

// lock locks names and returns the function that unlocks them.
func (l *keyLocks) lock(names []string) func() {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	l.mu.Lock()
	for l.anyHeld(names) {
		l.free.Wait()
	}
	return l.take(names)
}

// tryLock locks names when none is held, and returns the function that
// unlocks them; ok is false (and nothing locked) otherwise.
func (l *keyLocks) tryLock(names []string) (unlock func(), ok bool) {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	l.mu.Lock()
	if l.anyHeld(names) {
		l.mu.Unlock()
		return nil, false
	}
	return l.take(names), true
}

// take marks names held, unlocks l.mu and returns the function that
// releases names.
func (l *keyLocks) take(names []string) func() {
	for _, n := range names {
		l.held[n] = struct{}{}
	}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		for _, n := range names {
			delete(l.held, n)
		}
		l.mu.Unlock()
		l.free.Broadcast()
	}
}

func (l *keyLocks) anyHeld(names []string) bool {
	for _, n := range names {
		if _, ok := l.held[n]; ok {
			return true
		}
	}
	return false
}
