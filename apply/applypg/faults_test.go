package applypg_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/internal/testenv"
)

// fault is what the faulty pool does to the next batch of statements it
// sends that matches.
type fault int32

const (
	noFault fault = iota
	// killBeforeWrites terminates the backend just before the batch that
	// opens the transaction and sends the writes.
	killBeforeWrites
	// killBeforeCommit terminates the backend with the transaction open and
	// written, just before COMMIT is sent: the batch rolls back.
	killBeforeCommit
	// loseCommitAck lets COMMIT reach the server, then breaks the
	// connection before its answer is read: the batch commits, and the
	// applier cannot know.
	loseCommitAck
)

func (f fault) String() string {
	return [...]string{"none", "kill before writes", "kill before commit", "lose commit ack"}[f]
}

// faults injects connection failures into the connections of a pool.
type faults struct {
	admin *pgxpool.Pool // to terminate backends
	next  atomic.Int32  // the fault armed for the next matching batch
	fired atomic.Int32  // faults injected
	mu    sync.Mutex
	errs  []error
}

// faultyPool returns a pool to db whose connections fail as f is armed.
func faultyPool(t testing.TB, db *testenv.DB) (*pgxpool.Pool, *faults) {
	t.Helper()
	f := &faults{admin: db.Pool}
	cfg, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	cfg.ConnConfig.Tracer = f
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &faultyConn{Conn: c}, nil
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool, f
}

// arm makes the next matching batch fail with x.
func (f *faults) arm(x fault) { f.next.Store(int32(x)) }

func (f *faults) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (f *faults) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData)     {}
func (f *faults) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (f *faults) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (f *faults) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	qs := data.Batch.QueuedQueries
	if len(qs) == 0 {
		return ctx
	}
	opens := false
	for _, q := range qs {
		if q.SQL == "BEGIN" {
			opens = true
		}
	}
	commits := qs[0].SQL == "COMMIT"
	want := fault(f.next.Load())
	switch {
	case want == killBeforeWrites && opens, want == killBeforeCommit && commits:
		if !f.next.CompareAndSwap(int32(want), int32(noFault)) {
			return ctx
		}
		f.fired.Add(1)
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		var ok bool
		if err := f.admin.QueryRow(kctx, "SELECT pg_terminate_backend($1, 5000)", int32(conn.PgConn().PID())).Scan(&ok); err != nil || !ok {
			f.mu.Lock()
			f.errs = append(f.errs, err)
			f.mu.Unlock()
		}
	case want == loseCommitAck && commits:
		if !f.next.CompareAndSwap(int32(want), int32(noFault)) {
			return ctx
		}
		f.fired.Add(1)
		conn.PgConn().Conn().(*faultyConn).failAfterWrite.Store(true)
	}
	return ctx
}

// faultyConn breaks its reads once it wrote after failAfterWrite was set.
type faultyConn struct {
	net.Conn
	failAfterWrite atomic.Bool
	broken         atomic.Bool
}

func (c *faultyConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.failAfterWrite.Load() && hasExecute(b) {
		c.broken.Store(true)
	}
	return n, err
}

// hasExecute reports whether the protocol messages in b include an Execute
// (b starts at a message boundary, as pgconn writes whole messages).
func hasExecute(b []byte) bool {
	for i := 0; i+5 <= len(b); {
		if b[i] == 'E' {
			return true
		}
		i += 1 + int(binary.BigEndian.Uint32(b[i+1:]))
	}
	return false
}

func (c *faultyConn) Read(b []byte) (int, error) {
	if c.broken.Load() {
		_ = c.Conn.Close()
		return 0, io.ErrUnexpectedEOF
	}
	return c.Conn.Read(b)
}
