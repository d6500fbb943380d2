package applypg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/pgutil"
	"github.com/duplexsync/duplex/internal/pgvalue"
)

var commitTimeDecoder = pgvalue.Decoder(oidTimestamptz)

// cleanupTimeout bounds the statements that return a connection to a clean
// state (no transaction, no replication origin) after an apply.
const cleanupTimeout = 5 * time.Second

// originPool hands out replication origin names to concurrent applies of
// one Applier: a session can only use an origin no other session has set
// up, so the first apply uses the configured origin and concurrent ones use
// variants (origin + "_#c2", ...), created on first use and kept. Every
// name starts with the configured origin and "_", so the sync's source
// drops their transactions too.
type originPool struct {
	base string
	mu   sync.Mutex
	free []string
	made int
	init bool
}

// get returns an idle origin name; isNew says it may not exist yet.
func (p *originPool) get() (name string, isNew bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.init {
		p.init = true
		p.made = 1
		return p.base, false // New created it
	}
	if n := len(p.free); n > 0 {
		name = p.free[n-1]
		p.free = p.free[:n-1]
		return name, false
	}
	p.made++
	return p.base + "_#c" + strconv.Itoa(p.made), true
}

// put returns a name that exists on the server to the pool.
func (p *originPool) put(name string) {
	p.mu.Lock()
	p.free = append(p.free, name)
	p.mu.Unlock()
}

// createOrigin creates the replication origin name unless it exists.
func createOrigin(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, name string) error {
	_, err := db.Exec(ctx, `SELECT pg_catalog.pg_replication_origin_create($1)
		WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_replication_origin WHERE roname = $1)`, name)
	if pgutil.SQLState(err) == "23505" { // created concurrently
		return nil
	}
	return err
}

// isOriginBusy reports the error of pg_replication_origin_session_setup
// for an origin another session has set up.
func isOriginBusy(err error) bool {
	pe, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pe.Code == "55006" && strings.Contains(pe.Message, "replication origin")
}

// session is one acquired connection working under a replication origin.
type session struct {
	conn      *pgxpool.Conn
	origin    string
	originSet bool // pg_replication_origin_session_setup ran
	inTx      bool // a transaction may be open
	// started is the backend's start time (with its pid, it identifies
	// the backend), read when the origin is set up.
	started time.Time
}

// setupSQL and resetSQL start and end the use of an origin by a session.
const (
	setupSQL = `SELECT (SELECT a.backend_start FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) AS a)
		FROM pg_catalog.pg_replication_origin_session_setup($1)`
	resetSQL = "SELECT pg_catalog.pg_replication_origin_session_reset()"
)

// withOrigin runs fn on a connection of the pool with an origin name for
// fn to set up. fn reports busy when the origin turned out to be held by
// another session (another process applying with the same origin); fn is
// then run again with a per-connection origin (origin + "_#p" + backend
// pid), created for the occasion and dropped afterwards. The connection
// goes back to the pool with no transaction open and no origin set up, or
// is closed.
func (a *Applier) withOrigin(ctx context.Context, fn func(s *session) (busy bool, err error)) error {
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		return pgutil.Classify(err)
	}
	name, isNew := a.origins.get()
	exists := !isNew
	s := &session{conn: conn, origin: name}
	var temp string
	defer func() {
		if s.inTx && conn.Conn().IsClosed() {
			// The connection broke with a transaction open, maybe while
			// COMMIT was on its way. Until its backend is gone, that
			// transaction may still commit (or hold locks).
			a.addSuspect(ctx, conn.Conn().PgConn().PID(), s.started)
		}
		a.cleanup(ctx, s, temp)
		if exists {
			a.origins.put(name)
		}
		conn.Release()
	}()
	if isNew {
		if err := createOrigin(ctx, conn, name); err != nil {
			return pgutil.Classify(fmt.Errorf("applypg: create replication origin %s: %w", name, err))
		}
		exists = true
	}
	busy, err := fn(s)
	if !busy {
		return err
	}
	a.cleanup(ctx, s, "")
	if conn.Conn().IsClosed() {
		return err
	}
	temp = name + "_#p" + strconv.FormatUint(uint64(conn.Conn().PgConn().PID()), 10)
	if cerr := createOrigin(ctx, conn, temp); cerr != nil {
		temp = ""
		return pgutil.Classify(fmt.Errorf("applypg: create replication origin %s: %w", s.origin, cerr))
	}
	a.log.DebugContext(ctx, "replication origin busy; using a per-connection origin", "origin", name, "temporary", temp)
	s.origin, s.originSet, s.inTx = temp, false, false
	_, err = fn(s)
	return err
}

// setup sets up s's origin for the session, unless done. It returns
// errOriginBusy when another session holds the origin.
func (a *Applier) setup(ctx context.Context, s *session) error {
	if s.originSet {
		return nil
	}
	if err := a.setupResult(s.conn.QueryRow(ctx, setupSQL, s.origin).Scan(&s.started), s.origin); err != nil {
		return err
	}
	s.originSet = true
	return nil
}

// setupResult classifies the error of setupSQL for origin (nil: none).
func (a *Applier) setupResult(err error, origin string) error {
	if err == nil {
		return nil
	}
	if isOriginBusy(err) {
		return errOriginBusy
	}
	cerr := pgutil.Classify(err)
	if pgutil.SQLState(err) == "" || duplex.IsUnavailable(cerr) {
		return fmt.Errorf("applypg: %s: %w", a.cfg.Target, cerr)
	}
	// The endpoint cannot take the sync's writes (no right to use
	// replication origins?): not the changes' fault.
	return duplex.Unavailable(fmt.Errorf("applypg: %s: set up replication origin %s: %w", a.cfg.Target, origin, err))
}

// cleanup ends s's transaction and origin use; it closes the connection
// when that fails, so a connection with an origin set never goes back to
// the pool. temp, when set, is a per-connection origin to drop.
func (a *Applier) cleanup(ctx context.Context, s *session, temp string) bool {
	conn := s.conn.Conn()
	if conn.IsClosed() {
		return false
	}
	if !s.inTx && !s.originSet && temp == "" {
		return true
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	b := &pgx.Batch{}
	if s.inTx {
		b.Queue("ROLLBACK")
	}
	if s.originSet {
		b.Queue(resetSQL)
	}
	if temp != "" {
		b.Queue("SELECT pg_catalog.pg_replication_origin_drop($1)", temp)
	}
	if err := conn.SendBatch(cctx, b).Close(); err != nil {
		a.log.WarnContext(ctx, "could not reset the connection after an apply; closing it", slog.Any("err", err))
		_ = conn.Close(cctx)
		return false
	}
	s.inTx, s.originSet = false, false
	return true
}

// suspect is a backend whose connection broke with a transaction of the
// Applier open: the outcome of that transaction is unknown until the
// backend is gone.
type suspect struct {
	pid     uint32
	started time.Time
}

// settleTimeout bounds how long Apply waits for a suspect backend to go.
const settleTimeout = 15 * time.Second

// addSuspect records a backend whose transaction's outcome is unknown and
// tries to settle it at once.
func (a *Applier) addSuspect(ctx context.Context, pid uint32, started time.Time) {
	if started.IsZero() {
		return // the origin was never set up: nothing was written
	}
	a.suspectMu.Lock()
	a.suspects = append(a.suspects, suspect{pid: pid, started: started})
	a.suspectMu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := a.settle(sctx); err != nil {
		a.log.WarnContext(ctx, "could not make sure a broken apply transaction ended; the ledger will wait for it", "pid", pid, slog.Any("err", err))
	}
}

// settle makes sure the backends of broken connections are gone, so the
// transactions they had open are committed or rolled back for good: it
// terminates each (pg_terminate_backend waits for its exit). The ledger
// answers only once that is done, or it could say "not applied" about a
// batch whose COMMIT the server is still processing.
func (a *Applier) settle(ctx context.Context) error {
	a.suspectMu.Lock()
	defer a.suspectMu.Unlock()
	for len(a.suspects) > 0 {
		sp := a.suspects[0]
		var gone bool
		err := a.pool.QueryRow(ctx, `SELECT count(*) = 0 OR coalesce(bool_and(pg_catalog.pg_terminate_backend(pid, 10000)), false)
			FROM pg_catalog.pg_stat_activity WHERE pid = $1 AND backend_start = $2`,
			int32(sp.pid), sp.started).Scan(&gone)
		if err != nil {
			return pgutil.Classify(fmt.Errorf("applypg: %s: end the backend %d of a broken apply: %w", a.cfg.Target, sp.pid, err))
		}
		if !gone {
			return duplex.Unavailable(fmt.Errorf("applypg: %s: the backend %d of a broken apply has not exited yet", a.cfg.Target, sp.pid))
		}
		a.suspects = a.suspects[1:]
	}
	return nil
}
