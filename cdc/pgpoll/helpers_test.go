package pgpoll_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/cdctest"
	"github.com/duplexsync/duplex/cdc/pgpoll"
	"github.com/duplexsync/duplex/internal/testenv"
)

// waitFor bounds how long a test waits for changes or a condition.
const waitFor = 60 * time.Second

func logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// itemsDDL creates the test table: updated_at is set by a trigger from
// the clock at each write.
const itemsDDL = `
CREATE TABLE items (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	n bigint NOT NULL,
	note text,
	updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX items_poll ON items (updated_at, id);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();`

// harness is a database with the items table, polled by sources of one
// sync. It implements cdctest.Harness.
type harness struct {
	t     *testing.T
	db    *testenv.DB
	sync  string
	mod   func(*pgpoll.Config)
	table duplex.Table
}

var (
	_ cdctest.Harness          = (*harness)(nil)
	_ cdctest.PositionComparer = (*harness)(nil)
)

func newHarness(t *testing.T, mod func(*pgpoll.Config)) *harness {
	t.Helper()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), itemsDDL)
	require.NoError(t, err)
	h := &harness{t: t, db: db, sync: testenv.UniqueName(t, "s"), mod: mod, table: duplex.Table{Schema: "public", Name: "items"}}
	// Setup now, so that the tombstone trigger catches every delete.
	require.NoError(t, h.newSource().Setup(t.Context()))
	return h
}

func (h *harness) config() pgpoll.Config {
	cfg := pgpoll.Config{
		ConnString: h.db.URL, Sync: h.sync, System: "a", Tables: []duplex.Table{h.table},
		Interval: 5 * time.Millisecond, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		Logger: logger(h.t),
	}
	if h.mod != nil {
		h.mod(&cfg)
	}
	return cfg
}

func (h *harness) newSource() *pgpoll.Source {
	return h.sourceWith(h.config())
}

func (h *harness) sourceWith(cfg pgpoll.Config) *pgpoll.Source {
	h.t.Helper()
	src, err := pgpoll.New(context.Background(), cfg)
	require.NoError(h.t, err)
	h.t.Cleanup(src.Close)
	return src
}

func (h *harness) Source() duplex.ChangeSource { return h.newSource() }
func (h *harness) Table() duplex.Table         { return h.table }

func (h *harness) ComparePositions(a, b duplex.Position) int { return pgpoll.ComparePositions(a, b) }

func (h *harness) Insert(ctx context.Context, id int64, name string, n int64) error {
	return h.Tx(ctx, func(w cdctest.Writer) error { return w.Insert(ctx, id, name, n) })
}

func (h *harness) Update(ctx context.Context, id int64, set duplex.Values) error {
	return h.Tx(ctx, func(w cdctest.Writer) error { return w.Update(ctx, id, set) })
}

func (h *harness) Delete(ctx context.Context, id int64) error {
	return h.Tx(ctx, func(w cdctest.Writer) error { return w.Delete(ctx, id) })
}

func (h *harness) WriteAsOrigin(context.Context, string, int64, string) error {
	return errors.New("pgpoll: polling does not report origins")
}

func (h *harness) Tx(ctx context.Context, fn func(w cdctest.Writer) error) error {
	return pgx.BeginFunc(ctx, h.db.Pool, func(tx pgx.Tx) error { return fn(writer{tx}) })
}

// writer writes to items in one transaction.
type writer struct{ tx pgx.Tx }

func (w writer) Insert(ctx context.Context, id int64, name string, n int64) error {
	_, err := w.tx.Exec(ctx, "INSERT INTO items (id, name, n) VALUES ($1, $2, $3)", id, name, n)
	return err
}

func (w writer) Update(ctx context.Context, id int64, set duplex.Values) error {
	cols := make([]string, 0, len(set))
	for c := range set {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	args := []any{id}
	var sets []string
	for _, c := range cols {
		args = append(args, set[c])
		sets = append(sets, fmt.Sprintf("%s = $%d", pgx.Identifier{c}.Sanitize(), len(args)))
	}
	tag, err := w.tx.Exec(ctx, "UPDATE items SET "+strings.Join(sets, ", ")+" WHERE id = $1", args...)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("update items id=%d: no such row", id)
	}
	return err
}

func (w writer) Delete(ctx context.Context, id int64) error {
	tag, err := w.tx.Exec(ctx, "DELETE FROM items WHERE id = $1", id)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("delete items id=%d: no such row", id)
	}
	return err
}
