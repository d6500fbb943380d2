package loopguard_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dedup"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/loopguard"
	"github.com/duplexsync/duplex/memdb"
)

type skips struct {
	duplex.NopObserver
	echo, noop atomic.Int64
}

func (s *skips) Skipped(_ context.Context, e duplex.SkippedEvent) {
	switch e.Reason {
	case duplex.SkipEcho:
		s.echo.Add(int64(e.Count))
	case duplex.SkipNoop:
		s.noop.Add(int64(e.Count))
	}
}

// TestSyncWithoutOrigins runs a two-way sync between systems whose sources
// cannot tell who made a change: the content-hash guard alone keeps the
// sync from sending its own writes back.
func TestSyncWithoutOrigins(t *testing.T) {
	t.Parallel()
	endpoint := func(name string) (duplex.Endpoint, *memdb.DB) {
		db := memdb.New(name)
		require.NoError(t, db.CreateTable(customers, memdb.TableOptions{Key: []string{"id"}, Columns: []string{"id", "name", "note"}}))
		h := loopguard.NewHashes(loopguard.HashesConfig{TTL: time.Minute})
		return duplex.Endpoint{
			Name:      name,
			Source:    db.Source(memdb.SourceConfig{}),
			Applier:   loopguard.Remembering(db.Applier(""), h), // no origin
			Deduper:   dedup.NewMemory(dedup.MemoryConfig{}),
			LoopGuard: h,
		}, db
	}
	a, dbA := endpoint("a")
	b, dbB := endpoint("b")
	obs := &skips{}
	dead := dlq.NewMemory(dlq.MemoryConfig{})
	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name: "t", A: a, B: b, DeadLetters: dead, Observer: obs,
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Options: duplex.Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	require.NoError(t, dbA.Insert(customers, duplex.Values{"id": int64(1), "name": "Ann"}))
	require.NoError(t, dbB.Insert(customers, duplex.Values{"id": int64(2), "name": "Bob"}))
	converged := func() bool {
		ra, rb := dbA.Rows(customers), dbB.Rows(customers)
		if len(ra) != 2 || len(rb) != 2 {
			return false
		}
		for k, r := range ra {
			if loopguard.Hash(r) != loopguard.Hash(rb[k]) {
				return false
			}
		}
		return true
	}
	require.Eventually(t, converged, 10*time.Second, time.Millisecond)

	require.NoError(t, dbA.Update(customers, key(2), duplex.Values{"name": "Bobby"}))
	require.Eventually(t, func() bool { return converged() && dbB.Get(customers, key(2))["name"] == "Bobby" }, 10*time.Second, time.Millisecond)

	// Three sync writes (1 to b, 2 to b, 2 to a), three echoes dropped, and
	// no change bounced back to be found a no-op on the other side.
	require.Eventually(t, func() bool { return obs.echo.Load() == 3 }, 10*time.Second, time.Millisecond)
	require.Zero(t, obs.noop.Load())
	require.Len(t, dbA.Changes(), 3)
	require.Len(t, dbB.Changes(), 3)
	_, total, err := dead.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Zero(t, total)
}
