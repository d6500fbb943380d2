package pglogical_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/internal/testenv"
)

// waitFor bounds how long a test waits for changes or a condition.
const waitFor = 60 * time.Second

// pollEvery is how often conditions are polled.
const pollEvery = 10 * time.Millisecond

// env is a test database with a sync name for its sources.
type env struct {
	t    *testing.T
	db   *testenv.DB
	sync string
}

func newEnv(t *testing.T, schema ...string) *env {
	t.Helper()
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	e := &env{t: t, db: db, sync: testenv.UniqueName(t, "s")}
	for _, sql := range schema {
		e.exec(sql)
	}
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	_, err := e.db.Pool.Exec(context.Background(), sql, args...)
	require.NoError(e.t, err, sql)
}

// config returns a fast-reacting Config for tables of the public schema.
func (e *env) config(tables ...string) pglogical.Config {
	cfg := pglogical.Config{
		ConnString: e.db.URL, Sync: e.sync, System: "a",
		SetReplicaIdentity: true, Linger: time.Millisecond, StatusInterval: 20 * time.Millisecond,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond, Logger: logger(e.t),
	}
	for _, n := range tables {
		cfg.Tables = append(cfg.Tables, duplex.Table{Schema: "public", Name: n})
	}
	return cfg
}

func (e *env) source(cfg pglogical.Config) *pglogical.Source {
	e.t.Helper()
	src, err := pglogical.New(context.Background(), cfg)
	require.NoError(e.t, err)
	e.t.Cleanup(src.Close)
	return src
}

// setupSource creates a source for tables and runs Setup, so that the slot
// exists and every later write is captured.
func (e *env) setupSource(mod func(*pglogical.Config), tables ...string) *pglogical.Source {
	e.t.Helper()
	cfg := e.config(tables...)
	if mod != nil {
		mod(&cfg)
	}
	src := e.source(cfg)
	require.NoError(e.t, src.Setup(e.t.Context(), false))
	return src
}

// walsender returns the pid of the walsender streaming slot, or 0.
func (e *env) walsender(slot string) int {
	var pid int
	err := e.db.Pool.QueryRow(context.Background(),
		"SELECT coalesce(max(pid), 0) FROM pg_stat_replication WHERE application_name = $1", slot).Scan(&pid)
	require.NoError(e.t, err)
	return pid
}

// terminate ends the walsender pid.
func (e *env) terminate(pid int) {
	e.t.Helper()
	var ok bool
	require.NoError(e.t, e.db.Pool.QueryRow(context.Background(), "SELECT pg_terminate_backend($1)", pid).Scan(&ok))
	require.True(e.t, ok, "terminate walsender %d", pid)
}

// confirmed returns the slot's confirmed_flush_lsn.
func (e *env) confirmed(slot string) pglogrepl.LSN {
	e.t.Helper()
	var s string
	require.NoError(e.t, e.db.Pool.QueryRow(context.Background(),
		"SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s))
	lsn, err := pglogrepl.ParseLSN(s)
	require.NoError(e.t, err)
	return lsn
}

func (e *env) currentLSN() pglogrepl.LSN {
	e.t.Helper()
	var s string
	require.NoError(e.t, e.db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s))
	lsn, err := pglogrepl.ParseLSN(s)
	require.NoError(e.t, err)
	return lsn
}

// stream runs Source.Stream in a goroutine and forwards the delivered
// changes to a channel.
type stream struct {
	t      *testing.T
	src    *pglogical.Source
	cancel context.CancelFunc
	ch     chan duplex.Change
	done   chan struct{}
	err    error
	// onBatch, when set, runs at the end of each fn call with the batch;
	// an error stops the stream.
	onBatch func(ctx context.Context, b []duplex.Change) error
}

type streamOpts struct {
	from duplex.Position
	// ack acknowledges each batch's last change after forwarding it.
	ack bool
	// onBatch runs after the batch was forwarded (and acknowledged).
	onBatch func(ctx context.Context, b []duplex.Change) error
}

func startStream(t *testing.T, src *pglogical.Source, o streamOpts) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{t: t, src: src, cancel: cancel, ch: make(chan duplex.Change, 1<<16), done: make(chan struct{}), onBatch: o.onBatch}
	go func() {
		defer close(s.done)
		s.err = src.Stream(ctx, o.from, func(ctx context.Context, b []duplex.Change) error {
			for _, c := range b {
				select {
				case s.ch <- c:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if o.ack {
				if err := src.Ack(ctx, b[len(b)-1].Position); err != nil {
					return err
				}
			}
			if s.onBatch != nil {
				return s.onBatch(ctx, b)
			}
			return nil
		})
	}()
	t.Cleanup(func() { _ = s.stop() })
	return s
}

// next returns the next n changes, failing the test when they do not
// arrive in time or the stream ends.
func (s *stream) next(n int) []duplex.Change {
	s.t.Helper()
	out := make([]duplex.Change, 0, n)
	timeout := time.NewTimer(waitFor)
	defer timeout.Stop()
	for len(out) < n {
		select {
		case c := <-s.ch:
			out = append(out, c)
		case <-s.done:
			// Drain what was forwarded before Stream returned.
			for len(out) < n {
				select {
				case c := <-s.ch:
					out = append(out, c)
				default:
					s.t.Fatalf("stream ended after %d of %d changes: %v", len(out), n, s.err)
				}
			}
		case <-timeout.C:
			s.t.Fatalf("got %d of %d changes in %v", len(out), n, waitFor)
		}
	}
	return out
}

// none checks that no change is waiting.
func (s *stream) none() {
	s.t.Helper()
	select {
	case c := <-s.ch:
		s.t.Fatalf("unexpected change %s %v %v", c.ID, c.Op, c.Key)
	default:
	}
}

// stop cancels the stream and returns Stream's result.
func (s *stream) stop() error {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(waitFor):
		return errors.New("stream did not stop")
	}
	return s.err
}

// wait waits for Stream to return on its own and returns its result.
func (s *stream) wait(timeout time.Duration) error {
	s.t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(timeout):
		s.t.Fatalf("Stream did not return within %v", timeout)
		return nil
	}
}

// idOf returns the value of the single-column key of c.
func idOf(t *testing.T, c duplex.Change) int64 {
	t.Helper()
	require.Len(t, c.Key, 1, "change %s", c.ID)
	v, ok := c.Key[0].Value.(int64)
	require.True(t, ok, "key %v", c.Key)
	return v
}

// posCommit returns the commit LSN encoded in a change's position.
func posCommit(t *testing.T, p duplex.Position) pglogrepl.LSN {
	t.Helper()
	parts := strings.Split(string(p), "/")
	require.Len(t, parts, 3, "position %q", p)
	n, err := strconv.ParseUint(parts[0], 16, 64)
	require.NoError(t, err)
	return pglogrepl.LSN(n)
}

// posResume returns the restart LSN encoded in a change's position.
func posResume(t *testing.T, p duplex.Position) pglogrepl.LSN {
	t.Helper()
	parts := strings.Split(string(p), "/")
	require.Len(t, parts, 3, "position %q", p)
	n, err := strconv.ParseUint(parts[2], 16, 64)
	require.NoError(t, err)
	return pglogrepl.LSN(n)
}

// insertRows inserts rows [from, to) into items, per rows in one
// transaction each.
func insertRows(ctx context.Context, e *env, from, to, per int) error {
	for lo := from; lo < to; lo += per {
		hi := min(lo+per, to)
		if _, err := e.db.Pool.Exec(ctx,
			"INSERT INTO items (id, name, n) SELECT g, 'row ' || g, g FROM generate_series($1::bigint, $2::bigint) g ORDER BY g",
			lo, hi-1); err != nil {
			return fmt.Errorf("insert %d..%d: %w", lo, hi-1, err)
		}
	}
	return nil
}
