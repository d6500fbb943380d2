package dlq_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/dlq/dlqtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	dlqtest.Run(t, func(t *testing.T) dlqtest.Sink { return dlq.NewMemory(dlq.MemoryConfig{}) })
}

func TestMemoryUsesClock(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now.Store(start.UnixNano())
	m := dlq.NewMemory(dlq.MemoryConfig{Now: func() time.Time { return time.Unix(0, now.Load()).UTC() }})

	l := &duplex.DeadLetter{Sync: "s", Direction: duplex.Direction{From: "a", To: "b"}, Change: duplex.Change{ID: "1"}}
	require.NoError(t, m.Put(t.Context(), l))
	e, err := m.Get(t.Context(), 1)
	require.NoError(t, err)
	require.True(t, e.FirstSeen.Equal(start), "zero At takes the store's clock")
	require.True(t, e.UpdatedAt.Equal(start))

	now.Add(int64(time.Minute))
	e, err = m.SetStatus(t.Context(), 1, nil, dlq.StatusDismissed, "ops", "dismissed")
	require.NoError(t, err)
	require.True(t, e.UpdatedAt.Equal(start.Add(time.Minute)))
	require.True(t, e.FirstSeen.Equal(start))
}

func TestMemoryPutWithoutChangeID(t *testing.T) {
	t.Parallel()
	m := dlq.NewMemory(dlq.MemoryConfig{})
	l := &duplex.DeadLetter{Sync: "s", Reason: duplex.ReasonInvalid}
	require.NoError(t, m.Put(t.Context(), l))
	require.NoError(t, m.Put(t.Context(), l))
	_, total, err := m.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Equal(t, 2, total, "changes without an ID cannot be recognised, and are never dropped")
}

func TestMemoryPutErrors(t *testing.T) {
	t.Parallel()
	m := dlq.NewMemory(dlq.MemoryConfig{})
	require.Error(t, m.Put(t.Context(), nil))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := m.Put(ctx, &duplex.DeadLetter{})
	require.ErrorIs(t, err, context.Canceled)
	require.True(t, duplex.IsUnavailable(err), "the Pipeline retries a Put canceled by its context")
}

type custom struct{ A []int }

func TestMemoryCopiesOtherValueShapes(t *testing.T) {
	t.Parallel()
	m := dlq.NewMemory(dlq.MemoryConfig{})
	ints := []int64{1, 2}
	strs := map[string]string{"k": "v"}
	arr := [][]byte{[]byte("ab")}
	var nilSlice []string
	l := &duplex.DeadLetter{Change: duplex.Change{ID: "1", After: duplex.Values{
		"ints": ints, "strs": strs, "arr": arr, "nil": nilSlice, "custom": custom{A: []int{1}},
		"anys": []any{nil, []byte("x")},
	}}}
	require.NoError(t, m.Put(t.Context(), l))
	ints[0], strs["k"], arr[0][0] = 9, "changed", 'z'
	e, err := m.Get(t.Context(), 1)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, e.Change.After["ints"])
	require.Equal(t, map[string]string{"k": "v"}, e.Change.After["strs"])
	require.Equal(t, [][]byte{[]byte("ab")}, e.Change.After["arr"])
	require.Nil(t, e.Change.After["nil"])
	require.Contains(t, e.Change.After, "nil")
	require.Equal(t, []any{nil, []byte("x")}, e.Change.After["anys"])
}

func TestEntryJSON(t *testing.T) {
	t.Parallel()
	m := dlq.NewMemory(dlq.MemoryConfig{})
	require.NoError(t, m.Put(t.Context(), &duplex.DeadLetter{
		Sync: "s", Direction: duplex.Direction{From: "a", To: "b"}, Reason: duplex.ReasonConflict,
		Change: duplex.Change{ID: "c1", Op: duplex.OpUpdate, Key: duplex.Key{{Name: "id", Value: int64(1)}}},
	}))
	e, err := m.Get(t.Context(), 1)
	require.NoError(t, err)
	b, err := json.Marshal(e)
	require.NoError(t, err)
	var fields map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &fields))
	for _, k := range []string{"id", "sync", "direction", "change", "reason", "error", "attempts", "at", "first_seen", "last_seen", "count", "status", "updated_at"} {
		require.Contains(t, fields, k, "the dead letter's fields are flattened into the entry")
	}
	require.JSONEq(t, `"pending"`, string(fields["status"]))
	var change map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(fields["change"], &change))
	require.JSONEq(t, `"update"`, string(change["op"]))
}
