package duplexpg

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// lockKey derives the advisory lock key of a sync's system from the names
// (the key pgbisync has always used, so that both refuse each other).
func lockKey(name, system string) int64 {
	h := fnv.New64a()
	h.Write([]byte("duplex/pgbisync/" + strings.ToLower(name) + "/" + system))
	return int64(h.Sum64()) //nolint:gosec // a hash, reinterpreted
}

// LockHeldError says another session holds a sync's lock on a database:
// another instance of the sync is running, and this one refuses to run
// beside it (two instances of one sync would apply every change twice).
type LockHeldError struct {
	// Sync and System name the sync and the database's system in it.
	Sync, System string
	// Label names the database in messages (EndpointConfig.Label).
	Label string
	// Database is the database's name.
	Database string
	// Holder describes the session holding the lock (backend pid,
	// application, client), or "" when it could not be read.
	Holder string
}

// Error implements error.
func (e *LockHeldError) Error() string {
	return fmt.Sprintf("%s: another instance of sync %s is already running on database %s%s: refusing to start (two instances of one sync would apply every change twice); stop it first",
		e.Label, e.Sync, e.Database, e.holder())
}

func (e *LockHeldError) holder() string {
	if e.Holder == "" {
		return ""
	}
	return " (lock held by " + e.Holder + ")"
}

// ErrLockLost says another session took a sync's lock while this instance
// had lost it (its session ended): another instance of the sync runs, so
// this one stopped. Run's error wraps it and the *LockHeldError.
var ErrLockLost = errors.New("lost the sync lock")

// syncLock is a session advisory lock held on one database for as long as
// the sync runs. It is released by unlock, or by the server when the
// process dies (its session ends).
type syncLock struct {
	pool *pgxpool.Pool
	held LockHeldError // what a refusal says
	wait time.Duration
	key  int64

	mu   sync.Mutex
	conn *pgxpool.Conn // nil while lost
}

// takeLock takes e's lock, trying for up to wait (a previous process's
// session may take a moment to end after it was killed).
func takeLock(ctx context.Context, e *Endpoint, wait time.Duration) (*syncLock, error) {
	l := &syncLock{pool: e.pool, wait: wait, key: lockKey(e.cfg.Sync, e.cfg.System),
		held: LockHeldError{Sync: e.cfg.Sync, System: e.cfg.System, Label: e.cfg.Label, Database: e.database}}
	conn, err := l.take(ctx)
	if err != nil {
		return nil, err
	}
	l.conn = conn
	return l, nil
}

// take takes the lock on a new session and returns that session.
func (l *syncLock) take(ctx context.Context) (*pgxpool.Conn, error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: connect for the sync lock: %w", l.held.Label, err)
	}
	deadline := time.Now().Add(l.wait)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_try_advisory_lock($1)", l.key).Scan(&ok); err != nil {
			conn.Release()
			return nil, fmt.Errorf("%s: take the sync lock: %w", l.held.Label, err)
		}
		if ok {
			return conn, nil
		}
		if time.Now().After(deadline) {
			e := l.held
			e.Holder = lockHolder(ctx, conn, l.key)
			conn.Release()
			return nil, &e
		}
		select {
		case <-ctx.Done():
			conn.Release()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// hold keeps the lock until ctx ends. Every interval it checks that the
// lock's session is alive (a session-level lock lasts as long as its
// session); when the session was lost (a server restart, a network
// failure, a terminated backend) it takes the lock again on a new one. It
// returns an error wrapping ErrLockLost when another session took the lock
// meanwhile.
func (l *syncLock) hold(ctx context.Context, interval time.Duration, logger *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	side := l.held.System
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		l.mu.Lock()
		conn := l.conn
		l.mu.Unlock()
		if conn != nil {
			pctx, cancel := context.WithTimeout(ctx, max(interval, 5*time.Second))
			err := conn.Ping(pctx)
			cancel()
			if err == nil || ctx.Err() != nil {
				continue
			}
			logger.Warn("the session holding the sync lock was lost; taking the lock again", "side", side, slog.Any("err", err))
			conn.Conn().Close(context.Background()) //nolint:errcheck // broken already
			conn.Release()
			l.mu.Lock()
			l.conn = nil
			l.mu.Unlock()
		}
		conn, err := l.take(ctx)
		switch {
		case err == nil:
			l.mu.Lock()
			l.conn = conn
			l.mu.Unlock()
			logger.Info("took the sync lock again", "side", side)
		case ctx.Err() != nil:
			return nil
		case errors.As(err, new(*LockHeldError)):
			return fmt.Errorf("%w on %s: %w", ErrLockLost, l.held.Label, err)
		default: // the database is unreachable: keep trying
			logger.Warn("cannot take the sync lock again yet", "side", side, slog.Any("err", err))
		}
	}
}

// lockHolder describes the session holding key, for the error message.
func lockHolder(ctx context.Context, conn *pgxpool.Conn, key int64) string {
	var pid int32
	var app, addr string
	err := conn.QueryRow(ctx, `
		SELECT l.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local')
		FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
		  AND l.classid = (($1::int8 >> 32) & 4294967295)::oid AND l.objid = ($1::int8 & 4294967295)::oid AND l.objsubid = 1
		LIMIT 1`, key).Scan(&pid, &app, &addr)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("backend pid %d, application %q, client %s", pid, app, addr)
}

// unlock releases the lock and its session.
func (l *syncLock) unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := l.conn.Exec(ctx, "SELECT pg_catalog.pg_advisory_unlock($1)", l.key)
	l.conn.Release()
	l.conn = nil
	if err != nil {
		return fmt.Errorf("%s: release the sync lock: %w", l.held.Label, err)
	}
	return nil
}
