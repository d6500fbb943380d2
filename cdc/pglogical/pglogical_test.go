package pglogical_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/cdctest"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// harness is a PostgreSQL database with one table, captured by a slot.
type harness struct {
	t     *testing.T
	db    *testenv.DB
	table duplex.Table
	sync  string
	cfg   func(*pglogical.Config)
}

const createTable = `CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, n bigint NOT NULL, note text)`

func newHarness(t *testing.T) *harness {
	db := testenv.Postgres(t)
	testenv.RequireLogical(t, db)
	h := &harness{t: t, db: db, table: duplex.Table{Schema: "public", Name: "items"}, sync: testenv.UniqueName(t, "s")}
	_, err := db.Pool.Exec(t.Context(), fmt.Sprintf(createTable, "items"))
	require.NoError(t, err)
	// The slot exists from here on, so every write below is captured.
	require.NoError(t, h.newSource().Setup(t.Context(), false))
	return h
}

func (h *harness) newSource() *pglogical.Source {
	cfg := pglogical.Config{
		ConnString: h.db.URL, Sync: h.sync, System: "a", Tables: []duplex.Table{h.table},
		SetReplicaIdentity: true, Linger: time.Millisecond, StatusInterval: 50 * time.Millisecond,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond, Logger: logger(h.t),
	}
	if h.cfg != nil {
		h.cfg(&cfg)
	}
	src, err := pglogical.New(h.t.Context(), cfg)
	require.NoError(h.t, err)
	h.t.Cleanup(src.Close)
	return src
}

func (h *harness) Source() duplex.ChangeSource { return h.newSource() }
func (h *harness) Table() duplex.Table         { return h.table }

func (h *harness) ComparePositions(a, b duplex.Position) int {
	return strings.Compare(string(a), string(b))
}

func (h *harness) Insert(ctx context.Context, id int64, name string, n int64) error {
	return insert(ctx, h.db.Pool, id, name, n)
}

func (h *harness) Update(ctx context.Context, id int64, set duplex.Values) error {
	return update(ctx, h.db.Pool, id, set)
}

func (h *harness) Delete(ctx context.Context, id int64) error { return del(ctx, h.db.Pool, id) }

func (h *harness) WriteAsOrigin(ctx context.Context, origin string, id int64, name string) error {
	conn, err := h.db.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)", origin); err != nil {
		return err
	}
	h.t.Cleanup(func() {
		_, _ = h.db.Pool.Exec(context.Background(), "SELECT pg_replication_origin_drop($1)", origin)
	})
	if _, err := conn.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", origin); err != nil {
		return err
	}
	defer func() { _, _ = conn.Exec(context.Background(), "SELECT pg_replication_origin_session_reset()") }()
	_, err = conn.Exec(ctx, "INSERT INTO items (id, name, n) VALUES ($1, $2, 0)", id, name)
	return err
}

func (h *harness) Tx(ctx context.Context, fn func(w cdctest.Writer) error) error {
	return pgx.BeginFunc(ctx, h.db.Pool, func(tx pgx.Tx) error { return fn(txWriter{tx}) })
}

type txWriter struct{ tx pgx.Tx }

func (w txWriter) Insert(ctx context.Context, id int64, name string, n int64) error {
	_, err := w.tx.Exec(ctx, "INSERT INTO items (id, name, n) VALUES ($1, $2, $3)", id, name, n)
	return err
}
func (w txWriter) Update(ctx context.Context, id int64, set duplex.Values) error {
	sql, args := updateSQL(id, set)
	tag, err := w.tx.Exec(ctx, sql, args...)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("no row %d", id)
	}
	return err
}
func (w txWriter) Delete(ctx context.Context, id int64) error {
	_, err := w.tx.Exec(ctx, "DELETE FROM items WHERE id = $1", id)
	return err
}

func insert(ctx context.Context, p *pgxpool.Pool, id int64, name string, n int64) error {
	_, err := p.Exec(ctx, "INSERT INTO items (id, name, n) VALUES ($1, $2, $3)", id, name, n)
	return err
}

func update(ctx context.Context, p *pgxpool.Pool, id int64, set duplex.Values) error {
	sql, args := updateSQL(id, set)
	tag, err := p.Exec(ctx, sql, args...)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("no row %d", id)
	}
	return err
}

func del(ctx context.Context, p *pgxpool.Pool, id int64) error {
	tag, err := p.Exec(ctx, "DELETE FROM items WHERE id = $1", id)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("no row %d", id)
	}
	return err
}

func updateSQL(id int64, set duplex.Values) (string, []any) {
	var cols []string
	args := []any{id}
	for _, c := range []string{"name", "n", "note"} {
		if v, ok := set[c]; ok {
			args = append(args, v)
			cols = append(cols, fmt.Sprintf("%s = $%d", c, len(args)))
		}
	}
	return "UPDATE items SET " + strings.Join(cols, ", ") + " WHERE id = $1", args
}

func TestConformance(t *testing.T) {
	t.Parallel()
	cdctest.Run(t, cdctest.Features{
		BeforeImage:  true,
		Deletes:      true,
		Origins:      true,
		Transactions: true,
		EveryVersion: true,
	}, func(t *testing.T) cdctest.Harness { return newHarness(t) })
}

// TestMarkerDropsTheSyncsOwnTransactions covers the loop guard's fallback for
// roles without replication origins: a transaction that starts with a marker
// row for this sync is dropped; other transactions, and markers of other
// syncs, go through.
func TestMarkerDropsTheSyncsOwnTransactions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.cfg = func(c *pglogical.Config) { c.Marker = true }
	src := h.newSource()
	require.NoError(t, src.Setup(t.Context(), false))
	marked := func(sync string, id int64) {
		require.NoError(t, pgx.BeginFunc(t.Context(), h.db.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(t.Context(), "WITH m AS (INSERT INTO duplex.tx_marker (sync, target) VALUES ($1, 'a') RETURNING id) DELETE FROM duplex.tx_marker WHERE id IN (SELECT id FROM m)", sync); err != nil {
				return err
			}
			_, err := tx.Exec(t.Context(), "INSERT INTO items (id, name, n) VALUES ($1, 'x', 0)", id)
			return err
		}))
	}
	marked(h.sync, 1)         // the sync's own write: dropped
	marked("another_sync", 2) // someone else's: delivered
	require.NoError(t, h.Insert(t.Context(), 3, "user", 0))

	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan duplex.Change, 16)
	done := make(chan error, 1)
	go func() {
		done <- src.Stream(ctx, "", func(_ context.Context, b []duplex.Change) error {
			for _, c := range b {
				got <- c
			}
			return nil
		})
	}()
	var ids []int64
	for len(ids) < 2 {
		select {
		case c := <-got:
			require.Equal(t, h.table, c.Table, "marker rows are never delivered")
			ids = append(ids, c.Key[0].Value.(int64))
		case <-time.After(30 * time.Second):
			t.Fatalf("timed out; got %v", ids)
		}
	}
	require.Equal(t, []int64{2, 3}, ids)
	cancel()
	require.NoError(t, <-done)
}
