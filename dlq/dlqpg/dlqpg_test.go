package dlqpg_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/dlq/dlqpg"
	"github.com/duplexsync/duplex/dlq/dlqtest"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/testenv"
)

// newStore returns a store in a schema of its own in the database of pool.
func newStore(t *testing.T, pool *pgxpool.Pool, cfg dlqpg.Config) *dlqpg.Store {
	t.Helper()
	if cfg.Schema == "" {
		cfg.Schema = testenv.UniqueName(t, "dlq")
	}
	s, err := dlqpg.New(t.Context(), pool, cfg)
	require.NoError(t, err)
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	dlqtest.Run(t, func(t *testing.T) dlqtest.Sink { return newStore(t, db.Pool, dlqpg.Config{}) })
}

func letter(cid string) *duplex.DeadLetter {
	return &duplex.DeadLetter{
		Sync:      "s",
		Direction: duplex.Direction{From: "a", To: "b"},
		Change: duplex.Change{
			ID: cid, Source: "a", Op: duplex.OpUpdate,
			Table: duplex.Table{Schema: "public", Name: "customers"},
			Key:   duplex.Key{{Name: "id", Value: int64(1)}},
		},
		Reason: duplex.ReasonPermanentError,
		At:     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

func TestNewDefaultSchemaAlongsidePgstate(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	// New and pgstate.Ensure share the schema and its lock: run them
	// together, more than once.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			_, err := dlqpg.New(t.Context(), db.Pool, dlqpg.Config{})
			errs <- err
		})
		wg.Go(func() { errs <- pgstate.Ensure(t.Context(), db.Pool, pgstate.DefaultSchema) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var reg *string
	require.NoError(t, db.Pool.QueryRow(t.Context(), "SELECT to_regclass('duplex.dead_letters')::text").Scan(&reg))
	require.NotNil(t, reg)
	require.Equal(t, "duplex.dead_letters", *reg)
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	_, err := dlqpg.New(t.Context(), nil, dlqpg.Config{})
	require.Error(t, err)
	var ce *duplex.ConfigError
	require.ErrorAs(t, err, &ce)
}

func TestUsesClock(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	var now atomic.Int64
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now.Store(start.UnixNano())
	s := newStore(t, db.Pool, dlqpg.Config{Now: func() time.Time { return time.Unix(0, now.Load()).UTC() }})

	l := letter("1")
	l.At = time.Time{}
	require.NoError(t, s.Put(t.Context(), l))
	es, _, err := s.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Len(t, es, 1)
	e := es[0]
	require.True(t, e.FirstSeen.Equal(start), "zero At takes the store's clock")
	require.True(t, e.At.Equal(start))
	require.True(t, e.UpdatedAt.Equal(start))

	now.Add(int64(time.Minute))
	e, err = s.SetStatus(t.Context(), e.ID, nil, dlq.StatusDismissed, "ops", "dismissed")
	require.NoError(t, err)
	require.True(t, e.UpdatedAt.Equal(start.Add(time.Minute)))
	require.True(t, e.FirstSeen.Equal(start))
}

func TestPutWithoutChangeID(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	s := newStore(t, db.Pool, dlqpg.Config{})
	l := letter("")
	require.NoError(t, s.Put(t.Context(), l))
	require.NoError(t, s.Put(t.Context(), l))
	_, total, err := s.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Equal(t, 2, total, "changes without an ID cannot be recognised, and are never dropped")
}

func TestPutErrors(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	schema := testenv.UniqueName(t, "dlq")
	s := newStore(t, db.Pool, dlqpg.Config{Schema: schema})
	require.Error(t, s.Put(t.Context(), nil))

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Put(ctx, letter("1"))
	require.ErrorIs(t, err, context.Canceled)
	require.True(t, duplex.IsUnavailable(err), "the Pipeline retries a Put canceled by its context")

	_, err = db.Pool.Exec(t.Context(), "DROP TABLE "+schema+".dead_letters")
	require.NoError(t, err)
	err = s.Put(t.Context(), letter("1"))
	require.Error(t, err)
	require.Equal(t, duplex.ClassPermanent, duplex.ClassOf(err), "%v", err)
	require.Contains(t, err.Error(), "dlqpg: put")
	_, _, err = s.List(t.Context(), dlq.Filter{})
	require.Equal(t, duplex.ClassPermanent, duplex.ClassOf(err), "%v", err)
}

// TestUnstorableText: PostgreSQL text and jsonb hold neither NUL nor
// invalid UTF-8; the payload keeps them, the columns replace them.
func TestUnstorableText(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	s := newStore(t, db.Pool, dlqpg.Config{})
	l := letter("id\x00\xff")
	l.Error = "bad \x00 byte \xff"
	l.Change.Key = duplex.Key{{Name: "k", Value: "a\x00b"}}
	l.Change.After = duplex.Values{"t\x00": "v\xff", "n": "x\x00"}
	l.Change.Position = "p\x00"
	l.Conflict = &duplex.ConflictInfo{Fields: []string{"f\x00"}, Source: duplex.Values{"s": "\xfe"}}
	require.NoError(t, s.Put(t.Context(), l))
	require.NoError(t, s.Put(t.Context(), l))

	es, total, err := s.List(t.Context(), dlq.Filter{Key: l.Change.Key.String()})
	require.NoError(t, err)
	require.Equal(t, 1, total)
	e := es[0]
	require.Equal(t, 2, e.Count, "the same change ID is the same entry")
	require.Equal(t, l.Change.ID, e.Change.ID)
	require.Equal(t, l.Change.Key, e.Change.Key)
	require.Equal(t, l.Change.After, e.Change.After)
	require.Equal(t, l.Change.Position, e.Change.Position)
	require.Equal(t, l.Conflict.Fields, e.Conflict.Fields)
	require.Equal(t, l.Conflict.Source, e.Conflict.Source)
	require.Equal(t, "bad \uFFFD byte \uFFFD", e.Error)
}

// TestIdentityNotByText: "a_to_b" and schema.name are ambiguous as text;
// the identity of an entry and PendingForKey use the parts, as Memory does.
func TestIdentityNotByText(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	s := newStore(t, db.Pool, dlqpg.Config{})
	l1 := letter("c")
	l1.Direction = duplex.Direction{From: "x_to", To: "y"}
	l2 := letter("c")
	l2.Direction = duplex.Direction{From: "x", To: "to_y"}
	l2.Change.Table = duplex.Table{Name: "public.customers"}
	require.Equal(t, l1.Direction.String(), l2.Direction.String())
	require.Equal(t, l1.Change.Table.String(), l2.Change.Table.String())
	require.NoError(t, s.Put(t.Context(), l1))
	require.NoError(t, s.Put(t.Context(), l2))

	es, total, err := s.List(t.Context(), dlq.Filter{Direction: "x_to_to_y", OldestFirst: true})
	require.NoError(t, err)
	require.Equal(t, 2, total, "Filter.Direction matches the text form")
	require.Equal(t, l1.Direction, es[0].Direction)
	require.Equal(t, l2.Direction, es[1].Direction)
	require.Equal(t, 1, es[0].Count)
	require.Equal(t, 1, es[1].Count)

	got, err := s.PendingForKey(t.Context(), l2.Direction, l2.Change.Table, "id=1")
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, es[1].ID, got[0].ID)
}

// TestDepthByteOrder: Depth sorts as Go compares strings, whatever the
// database's collation.
func TestDepthByteOrder(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	s := newStore(t, db.Pool, dlqpg.Config{})
	syncs := []string{"b", "B", "_x", "a", "Ä"}
	for i, name := range syncs {
		l := letter(strconv.Itoa(i))
		l.Sync = name
		require.NoError(t, s.Put(t.Context(), l))
	}
	rows, err := s.Depth(t.Context())
	require.NoError(t, err)
	var got []string
	for _, r := range rows {
		got = append(got, r.Sync)
	}
	require.Equal(t, []string{"B", "_x", "a", "b", "Ä"}, got)
}

func TestSetStatusConcurrent(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	s := newStore(t, db.Pool, dlqpg.Config{})
	require.NoError(t, s.Put(t.Context(), letter("1")))
	es, _, err := s.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	id := es[0].ID

	// Two operators: one resolves, one dismisses, both from pending. One
	// wins; the other gets a TransitionError naming the winner's status.
	const n = 8
	var (
		wg       sync.WaitGroup
		wins     atomic.Int32
		refusals atomic.Int32
	)
	for i := range n {
		to := dlq.StatusResolved
		if i%2 == 1 {
			to = dlq.StatusDismissed
		}
		wg.Go(func() {
			_, err := s.SetStatus(t.Context(), id, []dlq.Status{dlq.StatusPending}, to, "op"+strconv.Itoa(i), "")
			switch {
			case err == nil:
				wins.Add(1)
			case assertTransition(err):
				refusals.Add(1)
			default:
				t.Errorf("SetStatus: %v", err)
			}
		})
	}
	wg.Wait()
	e, err := s.Get(t.Context(), id)
	require.NoError(t, err)
	// Every caller whose target is the final status succeeds (first or
	// repeated); the others are refused.
	require.Equal(t, int32(n/2), wins.Load(), "final status %s", e.Status)
	require.Equal(t, int32(n/2), refusals.Load())
}

func assertTransition(err error) bool {
	var te *dlq.TransitionError
	return errorsAs(err, &te)
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
