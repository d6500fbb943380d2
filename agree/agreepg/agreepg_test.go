package agreepg_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/agree/agreepg"
	"github.com/duplexsync/duplex/agree/agreetest"
	"github.com/duplexsync/duplex/internal/pgstate"
	"github.com/duplexsync/duplex/internal/testenv"
)

var customers = duplex.Table{Schema: "public", Name: "customers"}

func id(i int) duplex.Key { return duplex.Key{{Name: "id", Value: int64(i)}} }

func row(v string) duplex.Agreement {
	return duplex.Agreement{Known: true, Version: 1, Row: duplex.Values{"v": v}}
}

// newStore returns a store for a sync of its own in the database of pool.
func newStore(t *testing.T, pool *pgxpool.Pool, cfg agreepg.Config) *agreepg.Store {
	t.Helper()
	if cfg.Sync == "" {
		cfg.Sync = testenv.UniqueName(t, "sync")
	}
	s, err := agreepg.New(t.Context(), pool, cfg)
	require.NoError(t, err)
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	for name, cache := range map[string]int{"default cache": 0, "no cache": -1, "tiny cache": 2} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := testenv.Postgres(t)
			agreetest.Run(t, func(t *testing.T) duplex.AgreementStore {
				return newStore(t, db.Pool, agreepg.Config{Cache: cache})
			})
		})
	}
}

func TestSyncsAreSeparate(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	a := newStore(t, db.Pool, agreepg.Config{Sync: "a"})
	b := newStore(t, db.Pool, agreepg.Config{Sync: "b"})
	require.NoError(t, a.Save(t.Context(), customers, []duplex.Key{id(1), id(2)}, []duplex.Agreement{row("a1"), row("a2")}))
	require.NoError(t, b.Save(t.Context(), customers, []duplex.Key{id(1)}, []duplex.Agreement{row("b1")}))

	as, err := a.Load(t.Context(), customers, []duplex.Key{id(1), id(2)})
	require.NoError(t, err)
	require.Equal(t, []duplex.Agreement{row("a1"), row("a2")}, as)
	bs, err := b.Load(t.Context(), customers, []duplex.Key{id(1), id(2)})
	require.NoError(t, err)
	require.Equal(t, []duplex.Agreement{row("b1"), {}}, bs)

	require.NoError(t, a.Forget(t.Context()))
	as, err = a.Load(t.Context(), customers, []duplex.Key{id(1), id(2)})
	require.NoError(t, err)
	require.Equal(t, []duplex.Agreement{{}, {}}, as, "forgotten, the cache too")
	b2 := newStore(t, db.Pool, agreepg.Config{Sync: "b"})
	bs, err = b2.Load(t.Context(), customers, []duplex.Key{id(1)})
	require.NoError(t, err)
	require.Equal(t, []duplex.Agreement{row("b1")}, bs, "the other sync's rows stay")
}

// TestPersistence: a second Store (a restart: its own, empty cache) loads
// what the first saved.
func TestPersistence(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	first := newStore(t, db.Pool, agreepg.Config{Sync: "s"})
	keys := []duplex.Key{id(1), id(2), id(3)}
	want := []duplex.Agreement{
		{Known: true, Row: duplex.Values{"id": int64(1), "blob": []byte{0, 1}, "n": nil}},
		{Known: true},
		{Known: true, Version: 9, Row: duplex.Values{"id": int64(3)}, Peer: duplex.Values{"id": int64(3), "x": "y"}, Unknown: []string{"x"}},
	}
	require.NoError(t, first.Save(t.Context(), customers, keys, want))

	second := newStore(t, db.Pool, agreepg.Config{Sync: "s"})
	got, err := second.Load(t.Context(), customers, append(keys, id(4)))
	require.NoError(t, err)
	for i := range want {
		agreetest.RequireAgreement(t, want[i], got[i], keys[i].String())
	}
	require.Equal(t, duplex.Agreement{}, got[3])
}

func TestNewConcurrentAndAgain(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	// New and pgstate.Ensure share the schema and its lock: run them
	// together, more than once.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 4 {
		wg.Go(func() {
			_, err := agreepg.New(t.Context(), db.Pool, agreepg.Config{Sync: "s" + strconv.Itoa(i)})
			errs <- err
		})
		wg.Go(func() { errs <- pgstate.Ensure(t.Context(), db.Pool, pgstate.DefaultSchema) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	s := newStore(t, db.Pool, agreepg.Config{Sync: "s0"})
	require.NoError(t, s.Save(t.Context(), customers, []duplex.Key{id(1)}, []duplex.Agreement{row("x")}))
	var reg *string
	require.NoError(t, db.Pool.QueryRow(t.Context(), "SELECT to_regclass('duplex.agreements')::text").Scan(&reg))
	require.NotNil(t, reg)
	require.Equal(t, "duplex.agreements", *reg)
}

func TestOddSchemaAndDDL(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	schema := `Odd "Schema".x`
	for _, stmt := range agreepg.DDL(schema) {
		_, err := db.Pool.Exec(t.Context(), stmt)
		require.NoError(t, err, stmt)
	}
	s := newStore(t, db.Pool, agreepg.Config{Sync: "s", Schema: schema})
	require.NoError(t, s.Save(t.Context(), customers, []duplex.Key{id(1)}, []duplex.Agreement{row("x")}))
	var n int
	require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM "Odd ""Schema"".x".agreements`).Scan(&n))
	require.Equal(t, 1, n)
	require.Contains(t, agreepg.DDL("")[0], `"duplex"`)
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	var ce *duplex.ConfigError
	_, err := agreepg.New(t.Context(), nil, agreepg.Config{Sync: "s"})
	require.ErrorAs(t, err, &ce)
	db := testenv.Postgres(t)
	_, err = agreepg.New(t.Context(), db.Pool, agreepg.Config{})
	require.ErrorAs(t, err, &ce)
	require.Contains(t, err.Error(), "Sync")
}

// TestCacheAndErrors: cached keys need no query (they load with the table
// gone), the others fail, classified and named; a failed Save drops its
// keys from the cache.
func TestCacheAndErrors(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	schema := testenv.UniqueName(t, "agree")
	s := newStore(t, db.Pool, agreepg.Config{Schema: schema})
	require.NoError(t, s.Save(t.Context(), customers, []duplex.Key{id(1), id(2)}, []duplex.Agreement{row("1"), row("2")}))

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Load(ctx, customers, []duplex.Key{id(3)})
	require.ErrorIs(t, err, context.Canceled)
	require.True(t, duplex.IsUnavailable(err), "%v", err)
	err = s.Save(ctx, customers, []duplex.Key{id(1)}, []duplex.Agreement{row("x")})
	require.True(t, duplex.IsUnavailable(err), "%v", err)
	as, err := s.Load(t.Context(), customers, []duplex.Key{id(1), id(2)})
	require.NoError(t, err)
	require.Equal(t, []duplex.Agreement{row("1"), row("2")}, as, "the canceled Save changed nothing")

	_, err = db.Pool.Exec(t.Context(), "DROP TABLE "+schema+".agreements")
	require.NoError(t, err)
	as, err = s.Load(t.Context(), customers, []duplex.Key{id(2), id(2)})
	require.NoError(t, err, "cache hits need no query")
	require.Equal(t, []duplex.Agreement{row("2"), row("2")}, as)

	_, err = s.Load(t.Context(), customers, []duplex.Key{id(2), id(3), id(4)})
	require.Error(t, err)
	require.Equal(t, duplex.ClassPermanent, duplex.ClassOf(err), "%v", err)
	require.Contains(t, err.Error(), "load 2 keys of public.customers")
	require.Contains(t, err.Error(), "agreements")

	err = s.Save(t.Context(), customers, []duplex.Key{id(2)}, []duplex.Agreement{row("y")})
	require.Equal(t, duplex.ClassPermanent, duplex.ClassOf(err), "%v", err)
	require.Contains(t, err.Error(), "save 1 keys of public.customers")
	_, err = s.Load(t.Context(), customers, []duplex.Key{id(2)})
	require.Error(t, err, "the failed Save dropped the key from the cache")

	err = s.Save(t.Context(), customers, []duplex.Key{id(1)}, nil)
	require.Equal(t, duplex.ClassPermanent, duplex.ClassOf(err), "%v", err)
}
