package dlqtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
)

// Sink is what a dead-letter queue implements: the Pipeline's side and the
// admin side.
type Sink interface {
	duplex.DeadLetterSink
	dlq.Store
}

// NewFunc returns a new, empty queue. It registers its own cleanup with
// t.Cleanup and fails t if it cannot build the queue.
type NewFunc func(t *testing.T) Sink

// Run runs the conformance suite against the queues newFunc builds. Its
// subtests run in parallel.
func Run(t *testing.T, newFunc NewFunc) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, s Sink)
	}{
		{"RoundTrip", roundTrip},
		{"RoundTripMinimal", roundTripMinimal},
		{"PutCopies", putCopies},
		{"ZeroAtUsesStoreClock", zeroAt},
		{"ListFilters", listFilters},
		{"ListOrderAndPaging", listPaging},
		{"ListDefaultLimit", listDefaultLimit},
		{"RePutUpdates", rePutUpdates},
		{"RePutReopens", rePutReopens},
		{"RePutIdentity", rePutIdentity},
		{"StatusTransitions", statusTransitions},
		{"StatusInvalid", statusInvalid},
		{"DismissKeepsEntry", dismissKeeps},
		{"Depth", depth},
		{"PendingForKey", pendingForKey},
		{"NotFound", notFound},
		{"ConcurrentPuts", concurrentPuts},
		{"CanceledContext", canceledContext},
		{"HeldRowOneEntry", heldRowOneEntry},
		{"HeldRowHistoryBounded", heldRowHistoryBounded},
		{"HeldRowOlderPutKeepsNewest", heldRowOlderPut},
		{"HeldRowAfterResolveNewEntry", heldRowAfterResolve},
		{"ListFieldAndAge", listFieldAndAge},
		{"DepthOldest", depthOldest},
		{"UniqueCollisionOneEntry", uniqueCollisionOneEntry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFunc(t)
			require.NotNil(t, s, "NewFunc returned nil")
			tt.run(t, s)
		})
	}
}

var (
	dirAB     = duplex.Direction{From: "a", To: "b"}
	dirBA     = dirAB.Reverse()
	customers = duplex.Table{Schema: "public", Name: "customers"}
	orders    = duplex.Table{Schema: "sales", Name: "orders"}
	// base is a time with microseconds, as databases keep them.
	base = time.Date(2026, 3, 4, 5, 6, 7, 891011000, time.UTC)
)

// letter returns a simple dead letter for key id=n with change ID cid.
func letter(cid string, n int) *duplex.DeadLetter {
	return &duplex.DeadLetter{
		Sync:      "s",
		Direction: dirAB,
		Change: duplex.Change{
			ID:         cid,
			Source:     "a",
			Table:      customers,
			Key:        duplex.Key{{Name: "id", Value: int64(n)}},
			Op:         duplex.OpUpdate,
			After:      duplex.Values{"id": int64(n), "name": "n" + strconv.Itoa(n)},
			CommitTime: base,
			Position:   duplex.Position("0/" + strconv.Itoa(n)),
		},
		Reason:   duplex.ReasonPermanentError,
		Error:    "boom",
		Attempts: 1,
		At:       base.Add(time.Duration(n) * time.Second),
	}
}

func put(t *testing.T, s Sink, l *duplex.DeadLetter) {
	t.Helper()
	require.NoError(t, s.Put(t.Context(), l), "Put %s", l.Change.ID)
}

// only lists with f and requires exactly one entry.
func only(t *testing.T, s Sink, f dlq.Filter) dlq.Entry {
	t.Helper()
	es, total, err := s.List(t.Context(), f)
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Equal(t, 1, total)
	return es[0]
}

func get(t *testing.T, s Sink, id int64) dlq.Entry {
	t.Helper()
	e, err := s.Get(t.Context(), id)
	require.NoError(t, err, "Get %d", id)
	require.Equal(t, id, e.ID)
	return e
}

// byChangeID returns the entry of change cid.
func byChangeID(t *testing.T, s Sink, cid string) dlq.Entry {
	t.Helper()
	es, _, err := s.List(t.Context(), dlq.Filter{Limit: 1000})
	require.NoError(t, err)
	for _, e := range es {
		if e.Change.ID == cid {
			return e
		}
	}
	t.Fatalf("no entry for change %s", cid)
	return dlq.Entry{}
}

func changeIDs(es []dlq.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Change.ID
	}
	return out
}

func sameTime(t *testing.T, want, got time.Time, what string) {
	t.Helper()
	require.True(t, want.Truncate(time.Microsecond).Equal(got.Truncate(time.Microsecond)),
		"%s: want %s, got %s", what, want, got)
}

// requireValue requires got to equal want as the package doc says: by
// duplex.Equal, recursing into maps and slices, times to the microsecond.
func requireValue(t *testing.T, want, got any, path string) {
	t.Helper()
	switch w := want.(type) {
	case duplex.Values:
		requireValues(t, map[string]any(w), got, path)
		return
	case map[string]any:
		requireValues(t, w, got, path)
		return
	case []any:
		g, ok := got.([]any)
		require.True(t, ok, "%s: want []any, got %T", path, got)
		require.Len(t, g, len(w), path)
		for i := range w {
			requireValue(t, w[i], g[i], fmt.Sprintf("%s[%d]", path, i))
		}
		return
	case time.Time:
		g, ok := got.(time.Time)
		require.True(t, ok, "%s: want time.Time, got %T", path, got)
		sameTime(t, w, g, path)
		return
	}
	switch want.(type) {
	case json.RawMessage, duplex.JSONB: // json and jsonb compare differently: keep which
		require.IsType(t, want, got, path)
	}
	require.True(t, duplex.Equal(want, got), "%s: want %#v (%T), got %#v (%T)", path, want, want, got, got)
}

func requireValues(t *testing.T, want map[string]any, got any, path string) {
	t.Helper()
	var g map[string]any
	switch x := got.(type) {
	case duplex.Values:
		g = x
	case map[string]any:
		g = x
	default:
		require.Failf(t, "not a map", "%s: want a map, got %T", path, got)
	}
	require.Equal(t, want == nil, g == nil, "%s: nil map must stay nil and only nil", path)
	require.Len(t, g, len(want), "%s: %v", path, g)
	for k, wv := range want {
		gv, ok := g[k]
		require.True(t, ok, "%s: field %q missing", path, k)
		requireValue(t, wv, gv, path+"."+k)
	}
}

// requireLetter requires e to hold l, field by field.
func requireLetter(t *testing.T, l *duplex.DeadLetter, e *dlq.Entry) {
	t.Helper()
	require.Equal(t, l.Sync, e.Sync)
	require.Equal(t, l.Direction, e.Direction)
	require.Equal(t, l.Reason, e.Reason)
	require.Equal(t, l.Error, e.Error)
	require.Equal(t, l.Attempts, e.Attempts)
	sameTime(t, l.At, e.At, "At")

	w, g := &l.Change, &e.Change
	require.Equal(t, w.ID, g.ID)
	require.Equal(t, w.Source, g.Source)
	require.Equal(t, w.Table, g.Table)
	require.Equal(t, w.Op, g.Op)
	require.Equal(t, w.Position, g.Position)
	require.Equal(t, w.Origin, g.Origin)
	require.Equal(t, w.Unchanged, g.Unchanged)
	sameTime(t, w.CommitTime, g.CommitTime, "Change.CommitTime")
	require.Len(t, g.Key, len(w.Key), "Change.Key")
	for i := range w.Key {
		require.Equal(t, w.Key[i].Name, g.Key[i].Name, "Change.Key[%d]", i)
		requireValue(t, w.Key[i].Value, g.Key[i].Value, "Change.Key."+w.Key[i].Name)
	}
	require.Equal(t, w.Key.String(), g.Key.String())
	requireValues(t, w.Before, g.Before, "Change.Before")
	requireValues(t, w.After, g.After, "Change.After")

	if l.Conflict == nil {
		require.Nil(t, e.Conflict)
		return
	}
	require.NotNil(t, e.Conflict)
	require.Equal(t, l.Conflict.Kind, e.Conflict.Kind)
	require.Equal(t, l.Conflict.Fields, e.Conflict.Fields)
	require.Equal(t, l.Conflict.DecidedBy, e.Conflict.DecidedBy)
	requireValues(t, l.Conflict.Source, e.Conflict.Source, "Conflict.Source")
	requireValues(t, l.Conflict.Target, e.Conflict.Target, "Conflict.Target")
}

// full returns a dead letter using every field and every value shape.
func full() *duplex.DeadLetter {
	at := base.Add(time.Minute)
	return &duplex.DeadLetter{
		Sync:      "crm-sync",
		Direction: dirAB,
		Change: duplex.Change{
			ID:     "slot_a/0/16B3748#3",
			Source: "a",
			Table:  customers,
			Key:    duplex.Key{{Name: "tenant", Value: "acme"}, {Name: "id", Value: int64(42)}},
			Op:     duplex.OpUpdate,
			Before: duplex.Values{"tenant": "acme", "id": int64(42), "name": "Ann", "note": nil},
			After: duplex.Values{
				"tenant":  "acme",
				"id":      int64(42),
				"name":    "Anne",
				"note":    nil,
				"empty":   "",
				"small":   7, // an int; may come back as an int64
				"ratio":   1.25,
				"active":  true,
				"blob":    []byte{0, 1, 2, 0xfe, 0xff},
				"nobytes": []byte{},
				"seen_at": base.Add(-time.Hour),
				"doc":     json.RawMessage(`{"b":[1,2,{"c":null}],"a":"x"}`),
				"docb":    duplex.JSONB(`{"a": "x", "n": 12345678901234567891, "b": [1.0, 2]}`),
				"nested": map[string]any{
					"str":  "v",
					"num":  int64(3),
					"null": nil,
					"deep": map[string]any{"flag": false},
					"list": []any{"a", int64(1), nil, map[string]any{"k": "v"}},
				},
				"tags": []any{"vip", "eu"},
			},
			Unchanged:  []string{"big_text"},
			CommitTime: base,
			Position:   "0/16B3748",
			Origin:     "",
		},
		Reason:   duplex.ReasonConflict,
		Error:    "both sides changed name; clocks within skew tolerance",
		Attempts: 3,
		Conflict: &duplex.ConflictInfo{
			Kind:      duplex.UpdateUpdate,
			Fields:    []string{"name", "note"},
			Source:    duplex.Values{"name": "Anne", "note": nil},
			Target:    duplex.Values{"tenant": "acme", "id": int64(42), "name": "Annie", "note": "vip"},
			DecidedBy: "lww",
		},
		At: at,
	}
}

func roundTrip(t *testing.T, s Sink) {
	l := full()
	put(t, s, l)
	e := only(t, s, dlq.Filter{})
	require.NotZero(t, e.ID)
	requireLetter(t, l, &e)
	require.Equal(t, dlq.StatusPending, e.Status)
	require.Equal(t, 1, e.Count)
	sameTime(t, l.At, e.FirstSeen, "FirstSeen")
	sameTime(t, l.At, e.LastSeen, "LastSeen")
	require.False(t, e.UpdatedAt.IsZero(), "UpdatedAt")
	require.Empty(t, e.ResolvedBy)
	require.Empty(t, e.Resolution)
	require.Equal(t, `tenant="acme",id=42`, e.Key())

	g := get(t, s, e.ID)
	requireLetter(t, l, &g)
	require.Equal(t, e.Status, g.Status)
	require.Equal(t, e.Count, g.Count)

	// The entry is a copy: changing it does not change the store.
	g.Change.After["name"] = "changed"
	g.Change.After["blob"].([]byte)[0] = 9
	g.Change.After["nested"].(map[string]any)["str"] = "changed"
	g.Conflict.Fields[0] = "changed"
	g.Change.Key[1].Value = int64(0)
	g2 := get(t, s, e.ID)
	requireLetter(t, full(), &g2)
}

func roundTripMinimal(t *testing.T, s Sink) {
	l := &duplex.DeadLetter{
		Sync:      "s",
		Direction: dirBA,
		Change: duplex.Change{
			ID:         "b/1",
			Source:     "b",
			Table:      orders,
			Key:        duplex.Key{{Name: "id", Value: int64(1)}},
			Op:         duplex.OpDelete,
			CommitTime: base,
			Position:   "1",
			Origin:     "someone",
		},
		Reason: duplex.ReasonTruncate,
		At:     base,
	}
	put(t, s, l)
	e := only(t, s, dlq.Filter{})
	requireLetter(t, l, &e)
	require.Nil(t, e.Change.Before)
	require.Nil(t, e.Change.After)
	require.Nil(t, e.Conflict)
	require.Empty(t, e.Change.Unchanged)
}

// putCopies: the Pipeline may reuse a dead letter's memory after Put.
func putCopies(t *testing.T, s Sink) {
	l := full()
	put(t, s, l)
	l.Change.After["name"] = "mutated"
	l.Change.After["blob"].([]byte)[0] = 9
	l.Change.After["nested"].(map[string]any)["str"] = "mutated"
	l.Change.After["tags"].([]any)[0] = "mutated"
	l.Change.Key[0].Value = "mutated"
	l.Change.Unchanged[0] = "mutated"
	l.Conflict.Fields[0] = "mutated"
	l.Conflict.Target["name"] = "mutated"
	e := only(t, s, dlq.Filter{})
	requireLetter(t, full(), &e)
}

func zeroAt(t *testing.T, s Sink) {
	l := letter("x/1", 1)
	l.At = time.Time{}
	put(t, s, l)
	e := only(t, s, dlq.Filter{})
	require.False(t, e.FirstSeen.IsZero(), "FirstSeen")
	require.False(t, e.LastSeen.IsZero(), "LastSeen")
	require.False(t, e.At.IsZero(), "At")
}

// listFixture puts entries that differ in each filter dimension and
// returns the entries by change ID.
func listFixture(t *testing.T, s Sink) map[string]dlq.Entry {
	t.Helper()
	mk := func(cid string, sync string, dir duplex.Direction, table duplex.Table, reason duplex.Reason, key int) {
		l := letter(cid, key)
		l.Sync, l.Direction, l.Change.Table, l.Reason = sync, dir, table, reason
		put(t, s, l)
	}
	mk("c1", "s", dirAB, customers, duplex.ReasonConflict, 1)
	mk("c2", "s", dirAB, customers, duplex.ReasonPermanentError, 2)
	mk("c3", "s", dirBA, customers, duplex.ReasonConflict, 1)
	mk("c4", "s", dirAB, orders, duplex.ReasonRetriesExhausted, 1)
	mk("c5", "other", dirAB, customers, duplex.ReasonConflict, 3)
	mk("c6", "s", dirBA, orders, duplex.ReasonInvalid, 2)
	out := map[string]dlq.Entry{}
	es, total, err := s.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Equal(t, 6, total)
	for _, e := range es {
		out[e.Change.ID] = e
	}
	_, err = s.SetStatus(t.Context(), out["c2"].ID, []dlq.Status{dlq.StatusPending}, dlq.StatusDismissed, "op", "dismissed")
	require.NoError(t, err)
	_, err = s.SetStatus(t.Context(), out["c6"].ID, []dlq.Status{dlq.StatusPending}, dlq.StatusResolved, "op", "winner=b")
	require.NoError(t, err)
	return out
}

func listFilters(t *testing.T, s Sink) {
	listFixture(t, s)
	for _, tt := range []struct {
		name string
		f    dlq.Filter
		want []string // newest first
	}{
		{"all", dlq.Filter{}, []string{"c6", "c5", "c4", "c3", "c2", "c1"}},
		{"sync", dlq.Filter{Sync: "other"}, []string{"c5"}},
		{"direction", dlq.Filter{Direction: "b_to_a"}, []string{"c6", "c3"}},
		{"table", dlq.Filter{Table: "sales.orders"}, []string{"c6", "c4"}},
		{"reason", dlq.Filter{Reason: duplex.ReasonConflict}, []string{"c5", "c3", "c1"}},
		{"status pending", dlq.Filter{Status: dlq.StatusPending}, []string{"c5", "c4", "c3", "c1"}},
		{"status dismissed", dlq.Filter{Status: dlq.StatusDismissed}, []string{"c2"}},
		{"status resolved", dlq.Filter{Status: dlq.StatusResolved}, []string{"c6"}},
		{"status retried", dlq.Filter{Status: dlq.StatusRetried}, []string{}},
		{"key", dlq.Filter{Key: "id=1"}, []string{"c4", "c3", "c1"}},
		{"table and key", dlq.Filter{Table: "public.customers", Key: "id=1"}, []string{"c3", "c1"}},
		{"combined", dlq.Filter{Sync: "s", Direction: "a_to_b", Table: "public.customers", Reason: duplex.ReasonConflict, Status: dlq.StatusPending, Key: "id=1"}, []string{"c1"}},
		{"no match", dlq.Filter{Key: "id=99"}, []string{}},
	} {
		es, total, err := s.List(t.Context(), tt.f)
		require.NoError(t, err, tt.name)
		require.Equal(t, tt.want, changeIDs(es), tt.name)
		require.Equal(t, len(tt.want), total, tt.name)
	}
}

func listPaging(t *testing.T, s Sink) {
	const n = 25
	for i := 1; i <= n; i++ {
		put(t, s, letter("p"+strconv.Itoa(i), i))
	}
	list := func(f dlq.Filter) []string {
		t.Helper()
		es, total, err := s.List(t.Context(), f)
		require.NoError(t, err)
		require.Equal(t, n, total, "total ignores Limit, Offset and After: %+v", f)
		for i := 1; i < len(es); i++ {
			if f.OldestFirst {
				require.Less(t, es[i-1].ID, es[i].ID)
			} else {
				require.Greater(t, es[i-1].ID, es[i].ID)
			}
		}
		return changeIDs(es)
	}
	ids := func(from, to int) []string { // inclusive, either direction
		var out []string
		for i := from; ; {
			out = append(out, "p"+strconv.Itoa(i))
			if i == to {
				return out
			}
			if from < to {
				i++
			} else {
				i--
			}
		}
	}
	// Newest first by default.
	require.Equal(t, ids(25, 1), list(dlq.Filter{}))
	require.Equal(t, ids(25, 16), list(dlq.Filter{Limit: 10}))
	require.Equal(t, ids(15, 6), list(dlq.Filter{Limit: 10, Offset: 10}))
	require.Equal(t, ids(5, 1), list(dlq.Filter{Limit: 10, Offset: 20}))
	require.Empty(t, list(dlq.Filter{Limit: 10, Offset: 30}))
	require.Equal(t, ids(1, 25), list(dlq.Filter{OldestFirst: true}))
	require.Equal(t, ids(11, 15), list(dlq.Filter{OldestFirst: true, Limit: 5, Offset: 10}))

	// Keyset paging with After, both orders, visits every entry once.
	for _, oldest := range []bool{false, true} {
		var got []string
		f := dlq.Filter{OldestFirst: oldest, Limit: 7}
		for range n {
			es, total, err := s.List(t.Context(), f)
			require.NoError(t, err)
			require.Equal(t, n, total)
			if len(es) == 0 {
				break
			}
			got = append(got, changeIDs(es)...)
			f.After = es[len(es)-1].ID
		}
		if oldest {
			require.Equal(t, ids(1, 25), got)
		} else {
			require.Equal(t, ids(25, 1), got)
		}
	}

	// After combines with the other conditions and with Offset.
	mid := byChangeID(t, s, "p10").ID
	require.Equal(t, ids(9, 7), list(dlq.Filter{After: mid, Limit: 3}))
	require.Equal(t, ids(7, 5), list(dlq.Filter{After: mid, Limit: 3, Offset: 2}))
	require.Equal(t, ids(11, 13), list(dlq.Filter{After: mid, Limit: 3, OldestFirst: true}))
	es, total, err := s.List(t.Context(), dlq.Filter{After: mid, Key: "id=12"})
	require.NoError(t, err)
	require.Empty(t, es, "id=12 is newer than p10")
	require.Equal(t, 1, total)
}

func listDefaultLimit(t *testing.T, s Sink) {
	n := dlq.DefaultLimit + 5
	for i := 1; i <= n; i++ {
		put(t, s, letter("d"+strconv.Itoa(i), i))
	}
	es, total, err := s.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Len(t, es, dlq.DefaultLimit)
	require.Equal(t, n, total)
	require.Equal(t, "d"+strconv.Itoa(n), es[0].Change.ID)
}

func rePutUpdates(t *testing.T, s Sink) {
	l := letter("r1", 1)
	put(t, s, l)
	first := only(t, s, dlq.Filter{})

	l2 := letter("r1", 1)
	l2.Error = "boom again"
	l2.Attempts = 5
	l2.Reason = duplex.ReasonRetriesExhausted
	l2.At = l.At.Add(time.Hour)
	l2.Conflict = &duplex.ConflictInfo{Kind: duplex.UpdateDelete, Fields: []string{"name"}, Source: duplex.Values{"name": "x"}}
	put(t, s, l2)

	e := only(t, s, dlq.Filter{})
	require.Equal(t, first.ID, e.ID, "a re-put must update the entry, not add one")
	require.Equal(t, 2, e.Count)
	require.Equal(t, "boom again", e.Error)
	require.Equal(t, 5, e.Attempts)
	require.Equal(t, duplex.ReasonRetriesExhausted, e.Reason)
	requireLetter(t, l2, &e)
	sameTime(t, l.At, e.FirstSeen, "FirstSeen")
	sameTime(t, l2.At, e.LastSeen, "LastSeen")
	require.False(t, e.UpdatedAt.Before(first.UpdatedAt), "UpdatedAt went back")

	put(t, s, l2)
	require.Equal(t, 3, only(t, s, dlq.Filter{}).Count)
}

func rePutReopens(t *testing.T, s Sink) {
	for i, st := range []dlq.Status{dlq.StatusRetried, dlq.StatusDismissed, dlq.StatusResolved} {
		cid := "o" + strconv.Itoa(i)
		put(t, s, letter(cid, i))
		e := byChangeID(t, s, cid)
		_, err := s.SetStatus(t.Context(), e.ID, []dlq.Status{dlq.StatusPending}, st, "ops", "r-"+string(st))
		require.NoError(t, err)

		put(t, s, letter(cid, i)) // it failed again
		e = get(t, s, e.ID)
		require.Equal(t, dlq.StatusPending, e.Status, "a re-put of a %s entry must make it pending", st)
		require.Equal(t, 2, e.Count)
		require.Equal(t, "ops", e.ResolvedBy, "a re-put keeps the last action as history")
		require.Equal(t, "r-"+string(st), e.Resolution)
	}
	_, total, err := s.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Equal(t, 3, total)
}

// rePutIdentity: an entry is one change in one direction of one sync.
func rePutIdentity(t *testing.T, s Sink) {
	put(t, s, letter("same", 1))
	other := letter("same", 1)
	other.Direction = dirBA
	put(t, s, other)
	otherSync := letter("same", 1)
	otherSync.Sync = "s2"
	put(t, s, otherSync)
	put(t, s, letter("different", 1)) // same key, another change
	es, total, err := s.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Equal(t, 4, total)
	for _, e := range es {
		require.Equal(t, 1, e.Count)
	}
}

func statusTransitions(t *testing.T, s Sink) {
	put(t, s, letter("t1", 1))
	e := only(t, s, dlq.Filter{})
	pending := []dlq.Status{dlq.StatusPending}

	got, err := s.SetStatus(t.Context(), e.ID, pending, dlq.StatusResolved, "alice", "winner=a")
	require.NoError(t, err)
	require.Equal(t, dlq.StatusResolved, got.Status)
	require.Equal(t, "alice", got.ResolvedBy)
	require.Equal(t, "winner=a", got.Resolution)
	require.False(t, got.UpdatedAt.Before(e.UpdatedAt))
	requireLetter(t, letter("t1", 1), &got)
	stored := get(t, s, e.ID)
	require.Equal(t, dlq.StatusResolved, stored.Status)
	require.Equal(t, "alice", stored.ResolvedBy)
	require.Equal(t, "winner=a", stored.Resolution)

	// The same action again (a double click, or a second operator) returns
	// the entry unchanged.
	again, err := s.SetStatus(t.Context(), e.ID, pending, dlq.StatusResolved, "bob", "winner=b")
	require.NoError(t, err)
	require.Equal(t, dlq.StatusResolved, again.Status)
	require.Equal(t, "alice", again.ResolvedBy, "a repeated transition must not overwrite who acted")
	require.Equal(t, "winner=a", again.Resolution)
	require.True(t, again.UpdatedAt.Equal(stored.UpdatedAt), "a repeated transition must not touch the entry")

	// A different action from a status it does not apply to fails, naming
	// the entry and the statuses.
	_, err = s.SetStatus(t.Context(), e.ID, pending, dlq.StatusDismissed, "bob", "dismissed")
	require.ErrorIs(t, err, dlq.ErrTransition)
	var te *dlq.TransitionError
	require.ErrorAs(t, err, &te)
	require.Equal(t, e.ID, te.ID)
	require.Equal(t, dlq.StatusResolved, te.Status)
	require.Equal(t, dlq.StatusDismissed, te.To)
	require.Equal(t, pending, te.From)
	msg := err.Error()
	require.Contains(t, msg, strconv.FormatInt(e.ID, 10))
	require.Contains(t, msg, "resolved")
	require.Contains(t, msg, "pending")
	require.Contains(t, msg, "dismissed")
	require.Equal(t, dlq.StatusResolved, get(t, s, e.ID).Status, "a failed transition changed the entry")

	// Several allowed sources, and reopening.
	got, err = s.SetStatus(t.Context(), e.ID, []dlq.Status{dlq.StatusDismissed, dlq.StatusResolved}, dlq.StatusPending, "carol", "reopened")
	require.NoError(t, err)
	require.Equal(t, dlq.StatusPending, got.Status)
	require.Equal(t, "carol", got.ResolvedBy)

	// No from: any status.
	got, err = s.SetStatus(t.Context(), e.ID, nil, dlq.StatusRetried, "auto", "retry")
	require.NoError(t, err)
	require.Equal(t, dlq.StatusRetried, got.Status)
	got, err = s.SetStatus(t.Context(), e.ID, nil, dlq.StatusDismissed, "auto", "dismissed")
	require.NoError(t, err)
	require.Equal(t, dlq.StatusDismissed, got.Status)
	require.Equal(t, 1, got.Count, "a status change is not a put")
}

func statusInvalid(t *testing.T, s Sink) {
	put(t, s, letter("i1", 1))
	e := only(t, s, dlq.Filter{})
	_, err := s.SetStatus(t.Context(), e.ID, nil, dlq.Status("gone"), "x", "")
	require.Error(t, err)
	_, err = s.SetStatus(t.Context(), e.ID, []dlq.Status{"bogus"}, dlq.StatusResolved, "x", "")
	require.Error(t, err)
	require.Equal(t, dlq.StatusPending, get(t, s, e.ID).Status)
}

func dismissKeeps(t *testing.T, s Sink) {
	put(t, s, letter("k1", 1))
	put(t, s, letter("k2", 2))
	e := byChangeID(t, s, "k1")
	_, err := s.SetStatus(t.Context(), e.ID, []dlq.Status{dlq.StatusPending}, dlq.StatusDismissed, "ops", "dismissed")
	require.NoError(t, err)
	g := get(t, s, e.ID)
	require.Equal(t, dlq.StatusDismissed, g.Status)
	requireLetter(t, letter("k1", 1), &g)
	_, total, err := s.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Equal(t, 2, total, "dismissing must not delete")
	require.Equal(t, "k1", only(t, s, dlq.Filter{Status: dlq.StatusDismissed}).Change.ID)
}

func depth(t *testing.T, s Sink) {
	rows, err := s.Depth(t.Context())
	require.NoError(t, err)
	require.Empty(t, rows)

	entries := listFixture(t, s) // c2 dismissed, c6 resolved
	put(t, s, letter("c7", 7))   // s, a->b, customers, permanent_error
	rows, err = s.Depth(t.Context())
	require.NoError(t, err)
	rows = withoutOldest(rows)
	require.Equal(t, []dlq.DepthRow{
		{Sync: "other", Direction: "a_to_b", Table: "public.customers", Reason: "conflict", Count: 1},
		{Sync: "s", Direction: "a_to_b", Table: "public.customers", Reason: "conflict", Count: 1},
		{Sync: "s", Direction: "a_to_b", Table: "public.customers", Reason: "permanent_error", Count: 1},
		{Sync: "s", Direction: "a_to_b", Table: "sales.orders", Reason: "retries_exhausted", Count: 1},
		{Sync: "s", Direction: "b_to_a", Table: "public.customers", Reason: "conflict", Count: 1},
	}, rows)

	// A re-put counts once; a retried entry leaves the count.
	put(t, s, letter("c7", 7))
	l := letter("c8", 8)
	put(t, s, l)
	_, err = s.SetStatus(t.Context(), entries["c4"].ID, []dlq.Status{dlq.StatusPending}, dlq.StatusRetried, "ops", "retry")
	require.NoError(t, err)
	rows, err = s.Depth(t.Context())
	require.NoError(t, err)
	rows = withoutOldest(rows)
	require.Equal(t, []dlq.DepthRow{
		{Sync: "other", Direction: "a_to_b", Table: "public.customers", Reason: "conflict", Count: 1},
		{Sync: "s", Direction: "a_to_b", Table: "public.customers", Reason: "conflict", Count: 1},
		{Sync: "s", Direction: "a_to_b", Table: "public.customers", Reason: "permanent_error", Count: 2},
		{Sync: "s", Direction: "b_to_a", Table: "public.customers", Reason: "conflict", Count: 1},
	}, rows)
}

func pendingForKey(t *testing.T, s Sink) {
	key1 := letter("", 1).Change.Key.String()
	mk := func(cid string, key int, at time.Time) *duplex.DeadLetter {
		l := letter(cid, key)
		l.At = at
		put(t, s, l)
		return l
	}
	// Put order differs from first-seen order on purpose: k1c was first
	// seen earliest, though put last.
	k1a := mk("k1a", 1, base.Add(2*time.Second))
	mk("k2a", 2, base.Add(3*time.Second))
	mk("k1b", 1, base.Add(4*time.Second))
	mk("k1d", 1, base.Add(5*time.Second))
	mk("k1c", 1, base.Add(1*time.Second))
	rev := letter("k1rev", 1)
	rev.Direction = dirBA
	put(t, s, rev)
	ord := letter("k1ord", 1)
	ord.Change.Table = orders
	put(t, s, ord)

	got, err := s.PendingForKey(t.Context(), dirAB, customers, key1)
	require.NoError(t, err)
	require.Equal(t, []string{"k1c", "k1a", "k1b", "k1d"}, changeIDs(got))

	// Only pending entries; a re-put keeps the entry's place (first seen).
	_, err = s.SetStatus(t.Context(), byChangeID(t, s, "k1b").ID, nil, dlq.StatusDismissed, "ops", "dismissed")
	require.NoError(t, err)
	k1a.At = base.Add(time.Hour)
	put(t, s, k1a)
	got, err = s.PendingForKey(t.Context(), dirAB, customers, key1)
	require.NoError(t, err)
	require.Equal(t, []string{"k1c", "k1a", "k1d"}, changeIDs(got))
	require.Equal(t, 2, got[1].Count)

	got, err = s.PendingForKey(t.Context(), dirBA, customers, key1)
	require.NoError(t, err)
	require.Equal(t, []string{"k1rev"}, changeIDs(got))
	got, err = s.PendingForKey(t.Context(), dirAB, customers, "id=99")
	require.NoError(t, err)
	require.Empty(t, got)
}

func notFound(t *testing.T, s Sink) {
	_, err := s.Get(t.Context(), 987654)
	require.ErrorIs(t, err, dlq.ErrNotFound)
	require.Contains(t, err.Error(), "987654")
	_, err = s.SetStatus(t.Context(), 987654, nil, dlq.StatusDismissed, "ops", "dismissed")
	require.ErrorIs(t, err, dlq.ErrNotFound)
	require.Contains(t, err.Error(), "987654")
	_, err = s.Get(t.Context(), 0)
	require.ErrorIs(t, err, dlq.ErrNotFound)
}

func concurrentPuts(t *testing.T, s Sink) {
	const workers, each = 8, 25
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				// Every worker puts the shared changes; each also has its own.
				for _, cid := range []string{"shared" + strconv.Itoa(i%5), fmt.Sprintf("own%d_%d", w, i)} {
					if err := s.Put(t.Context(), letter(cid, i)); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
				}
				if _, _, err := s.List(t.Context(), dlq.Filter{Limit: 5}); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				if _, err := s.Depth(t.Context()); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	require.Empty(t, errs)
	es, total, err := s.List(t.Context(), dlq.Filter{Limit: 1000})
	require.NoError(t, err)
	require.Equal(t, 5+workers*each, total)
	ids := map[int64]bool{}
	for _, e := range es {
		require.False(t, ids[e.ID], "duplicate ID %d", e.ID)
		ids[e.ID] = true
		if len(e.Change.ID) > 6 && e.Change.ID[:6] == "shared" {
			require.Equal(t, workers*each/5, e.Count, e.Change.ID)
		} else {
			require.Equal(t, 1, e.Count, e.Change.ID)
		}
	}
}

// canceledContext: a done ctx may fail a call or be ignored, but must not
// panic, and a Put that returns nil has stored.
func canceledContext(t *testing.T, s Sink) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Put(ctx, letter("cc", 1)); err == nil {
		byChangeID(t, s, "cc")
	}
	put(t, s, letter("live", 2))
	id := byChangeID(t, s, "live").ID
	if es, _, err := s.List(ctx, dlq.Filter{Key: "id=2"}); err == nil {
		require.Equal(t, []string{"live"}, changeIDs(es))
	}
	if e, err := s.Get(ctx, id); err == nil {
		require.Equal(t, "live", e.Change.ID)
	}
	if e, err := s.SetStatus(ctx, id, nil, dlq.StatusDismissed, "ops", ""); err == nil {
		require.Equal(t, dlq.StatusDismissed, e.Status)
	}
	_, _ = s.Depth(ctx)
	_, _ = s.PendingForKey(ctx, dirAB, customers, "id=2")
}

// withoutOldest zeroes the rows' Oldest, which DepthOldest checks.
func withoutOldest(rows []dlq.DepthRow) []dlq.DepthRow {
	for i := range rows {
		rows[i].Oldest = time.Time{}
	}
	return rows
}

// held returns a dead letter of a row held by a two-way merge: customers
// id=1, field name contested, found in direction dir by change cid, the
// rows being name=src on dir.From and name=dst on dir.To.
func held(cid string, dir duplex.Direction, at time.Time, src, dst string, fields ...string) *duplex.DeadLetter {
	if fields == nil {
		fields = []string{"name"}
	}
	l := letter(cid, 1)
	l.Direction, l.At, l.Reason, l.Error = dir, at, duplex.ReasonConflict, "held: "+cid
	l.Change.Source = dir.From
	l.Change.After = duplex.Values{"id": int64(1), "name": src}
	l.Conflict = &duplex.ConflictInfo{Kind: duplex.UpdateUpdate, Fields: fields, Merge: true, DecidedBy: "lww",
		Base:   duplex.Values{"id": int64(1), "name": "base"},
		Source: duplex.Values{"id": int64(1), "name": src}, Target: duplex.Values{"id": int64(1), "name": dst}}
	return l
}

// heldRowOneEntry: later changes of a held row, from either direction,
// refresh its one pending entry (newest versions, count, history) instead
// of adding entries; another held field set is another entry.
func heldRowOneEntry(t *testing.T, s Sink) {
	put(t, s, held("h1", dirAB, base, "a1", "b0"))
	put(t, s, held("h2", dirAB, base.Add(time.Second), "a2", "b0"))
	put(t, s, held("h3", dirBA, base.Add(2*time.Second), "b3", "a2"))
	e := only(t, s, dlq.Filter{Status: dlq.StatusPending})
	require.Equal(t, 3, e.Count)
	require.Equal(t, "h3", e.Change.ID, "the entry holds the newest put")
	require.Equal(t, dirBA, e.Direction)
	require.Equal(t, "b3", e.Conflict.Source["name"])
	require.Equal(t, "a2", e.Conflict.Target["name"])
	require.Equal(t, "base", e.Conflict.Base["name"])
	require.True(t, e.Conflict.Merge)
	sameTime(t, base, e.FirstSeen, "FirstSeen")
	sameTime(t, base.Add(2*time.Second), e.LastSeen, "LastSeen")
	require.Len(t, e.History, 2)
	require.Equal(t, "h1", e.History[0].ChangeID)
	require.Equal(t, "a1", e.History[0].Source["name"])
	require.Equal(t, "b0", e.History[0].Target["name"])
	require.Equal(t, "h2", e.History[1].ChangeID)
	require.Equal(t, dirAB, e.History[1].Direction)
	sameTime(t, base.Add(time.Second), e.History[1].At, "History[1].At")

	// The same change put again (a replay) is the same entry too.
	put(t, s, held("h3", dirBA, base.Add(2*time.Second), "b3", "a2"))
	require.Equal(t, 4, only(t, s, dlq.Filter{}).Count)

	// Another held field set of the row is another entry.
	put(t, s, held("h4", dirAB, base.Add(3*time.Second), "a4", "b3", "name", "email"))
	_, total, err := s.List(t.Context(), dlq.Filter{Status: dlq.StatusPending})
	require.NoError(t, err)
	require.Equal(t, 2, total)
}

// heldRowHistoryBounded: the history keeps the newest HistoryLimit
// superseded versions.
func heldRowHistoryBounded(t *testing.T, s Sink) {
	n := dlq.HistoryLimit + 5
	for i := range n {
		put(t, s, held("v"+strconv.Itoa(i), dirAB, base.Add(time.Duration(i)*time.Second), "a"+strconv.Itoa(i), "b"))
	}
	e := only(t, s, dlq.Filter{})
	require.Equal(t, n, e.Count)
	require.Equal(t, "v"+strconv.Itoa(n-1), e.Change.ID)
	require.Len(t, e.History, dlq.HistoryLimit)
	require.Equal(t, "v"+strconv.Itoa(n-1-dlq.HistoryLimit), e.History[0].ChangeID, "the oldest versions are dropped first")
	require.Equal(t, "v"+strconv.Itoa(n-2), e.History[dlq.HistoryLimit-1].ChangeID)
}

// heldRowOlderPut: a put older than the entry's (a redelivery after a
// crash) goes to the history; the entry keeps the newest versions.
func heldRowOlderPut(t *testing.T, s Sink) {
	put(t, s, held("n2", dirAB, base.Add(time.Minute), "new", "b"))
	put(t, s, held("n1", dirAB, base, "old", "b"))
	e := only(t, s, dlq.Filter{})
	require.Equal(t, "n2", e.Change.ID)
	require.Equal(t, "new", e.Conflict.Source["name"])
	require.Equal(t, 2, e.Count)
	sameTime(t, base, e.FirstSeen, "FirstSeen")
	sameTime(t, base.Add(time.Minute), e.LastSeen, "LastSeen")
	require.Len(t, e.History, 1)
	require.Equal(t, "old", e.History[0].Source["name"])
}

// heldRowAfterResolve: once the row's entry is resolved, a new hold of
// the row is a new entry, and the resolved one stays resolved.
func heldRowAfterResolve(t *testing.T, s Sink) {
	put(t, s, held("r1", dirAB, base, "a1", "b1"))
	first := only(t, s, dlq.Filter{})
	_, err := s.SetStatus(t.Context(), first.ID, []dlq.Status{dlq.StatusPending}, dlq.StatusResolved, "ops", "winner=a")
	require.NoError(t, err)
	put(t, s, held("r2", dirBA, base.Add(time.Second), "b2", "a1"))
	pending := only(t, s, dlq.Filter{Status: dlq.StatusPending})
	require.NotEqual(t, first.ID, pending.ID)
	require.Equal(t, 1, pending.Count)
	require.Equal(t, dlq.StatusResolved, get(t, s, first.ID).Status)
	// Later holds go to the new pending entry.
	put(t, s, held("r3", dirBA, base.Add(2*time.Second), "b3", "a1"))
	require.Equal(t, 2, get(t, s, pending.ID).Count)
	// A one-way conflict (not a merge) is an entry of its own change.
	l := held("w1", dirAB, base.Add(3*time.Second), "x", "y")
	l.Conflict.Merge = false
	put(t, s, l)
	l = held("w2", dirAB, base.Add(4*time.Second), "x", "y")
	l.Conflict.Merge = false
	put(t, s, l)
	_, total, err := s.List(t.Context(), dlq.Filter{Status: dlq.StatusPending})
	require.NoError(t, err)
	require.Equal(t, 3, total)
}

// listFieldAndAge: Filter.Field matches a held field, Filter.Before the
// entries first seen before a time.
func listFieldAndAge(t *testing.T, s Sink) {
	put(t, s, held("f1", dirAB, base, "a", "b", "name"))
	l := held("f2", dirAB, base.Add(time.Hour), "a", "b", "email", "status")
	l.Change.Key = duplex.Key{{Name: "id", Value: int64(2)}}
	put(t, s, l)
	put(t, s, letter("f3", 3))
	require.Equal(t, "f1", only(t, s, dlq.Filter{Field: "name"}).Change.ID)
	require.Equal(t, "f2", only(t, s, dlq.Filter{Field: "status"}).Change.ID)
	es, total, err := s.List(t.Context(), dlq.Filter{Field: "nope"})
	require.NoError(t, err)
	require.Empty(t, es)
	require.Zero(t, total)
	require.Equal(t, "f1", only(t, s, dlq.Filter{Before: base.Add(time.Second)}).Change.ID)
	_, total, err = s.List(t.Context(), dlq.Filter{Before: base.Add(2 * time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 3, total)
}

// depthOldest: each depth row carries the earliest FirstSeen of its
// pending entries.
func depthOldest(t *testing.T, s Sink) {
	put(t, s, letter("d2", 2))
	put(t, s, letter("d1", 1))
	put(t, s, letter("d5", 5))
	e := byChangeID(t, s, "d1")
	_, err := s.SetStatus(t.Context(), e.ID, nil, dlq.StatusDismissed, "ops", "dismissed")
	require.NoError(t, err)
	rows, err := s.Depth(t.Context())
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, 2, rows[0].Count)
	sameTime(t, letter("d2", 2).At, rows[0].Oldest, "Oldest")
}
