package main

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

// lockKey derives the advisory lock key of a sync's side from its name.
func lockKey(name, side string) int64 {
	h := fnv.New64a()
	h.Write([]byte("duplex/pgbisync/" + strings.ToLower(name) + "/" + side))
	return int64(h.Sum64()) //nolint:gosec // a hash, reinterpreted
}

// syncLock is a session advisory lock held on one database for as long as
// the sync runs: a second pgbisync with the same -name cannot take it and
// refuses to start, instead of applying every change twice. It is released
// by unlock, or by the server when the process dies (its session ends).
type syncLock struct {
	pool                 *pgxpool.Pool
	name, side, database string
	wait                 time.Duration
	key                  int64

	mu   sync.Mutex
	conn *pgxpool.Conn // nil while lost
}

// lock takes the side's lock, trying for up to wait (a previous process's
// session may take a moment to end after it was killed).
func lock(ctx context.Context, pool *pgxpool.Pool, name, side, database string, wait time.Duration) (*syncLock, error) {
	l := &syncLock{pool: pool, name: name, side: side, database: database, wait: wait, key: lockKey(name, side)}
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
		return nil, fmt.Errorf("-%s: connect for the sync lock: %w", l.side, err)
	}
	deadline := time.Now().Add(l.wait)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_try_advisory_lock($1)", l.key).Scan(&ok); err != nil {
			conn.Release()
			return nil, fmt.Errorf("-%s: take the sync lock: %w", l.side, err)
		}
		if ok {
			return conn, nil
		}
		if time.Now().After(deadline) {
			holder := lockHolder(ctx, conn, l.key)
			conn.Release()
			return nil, &lockHeldError{fmt.Sprintf("-%s: another pgbisync with -name %s is already running on database %s%s: refusing to start (two syncs with one name would apply every change twice); stop it first",
				l.side, l.name, l.database, holder)}
		}
		select {
		case <-ctx.Done():
			conn.Release()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lockHeldError says another session holds the lock.
type lockHeldError struct{ msg string }

func (e *lockHeldError) Error() string { return e.msg }

// errLockLost says another session took the lock while this process had
// lost it: another pgbisync with the same name is running.
var errLockLost = errors.New("lost the sync lock")

// hold keeps the lock until ctx ends. Every interval it checks that the
// lock's session is alive (a session-level lock lasts as long as its
// session); when the session was lost (a server restart, a network
// failure, a terminated backend) it takes the lock again on a new one. It
// returns an error wrapping errLockLost when another session took the lock
// meanwhile, since two syncs with one name must not run together.
func (l *syncLock) hold(ctx context.Context, interval time.Duration, logger *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
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
			logger.Warn("the session holding the sync lock was lost; taking the lock again", "side", l.side, slog.Any("err", err))
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
			logger.Info("took the sync lock again", "side", l.side)
		case ctx.Err() != nil:
			return nil
		case errors.As(err, new(*lockHeldError)):
			return fmt.Errorf("%w on -%s: %w", errLockLost, l.side, err)
		default: // the database is unreachable: keep trying
			logger.Warn("cannot take the sync lock again yet", "side", l.side, slog.Any("err", err))
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
	return fmt.Sprintf(" (lock held by backend pid %d, application %q, client %s)", pid, app, addr)
}

// unlock releases the lock and its session.
func (l *syncLock) unlock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = l.conn.Exec(ctx, "SELECT pg_catalog.pg_advisory_unlock($1)", l.key)
	l.conn.Release()
	l.conn = nil
}
