package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/testenv"
	"github.com/duplexsync/duplex/resolve"
)

var items = duplex.Table{Schema: "public", Name: "items"}

const itemsDDL = `CREATE TABLE items (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	email text NOT NULL DEFAULT '',
	status text NOT NULL DEFAULT '',
	tags text[] NOT NULL DEFAULT '{}',
	visits bigint NOT NULL DEFAULT 0,
	updated_at timestamptz NOT NULL DEFAULT '2026-01-01')`

// onboardBed is two databases and a Sync between them that is onboarded
// directly (Sync.Onboard), without streaming.
type onboardBed struct {
	a, b   *testenv.DB
	name   string
	dlq    *dlq.Memory
	logger *slog.Logger
}

func newOnboardBed(t *testing.T, schema string) *onboardBed {
	t.Helper()
	ob := &onboardBed{a: testenv.Postgres(t), b: testenv.Postgres(t), name: testenv.UniqueName(t, "onb"),
		dlq: dlq.NewMemory(dlq.MemoryConfig{}), logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		ob.logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	for _, db := range []*testenv.DB{ob.a, ob.b} {
		testenv.RequireLogical(t, db)
		exec(t, db.Pool, schema)
	}
	return ob
}

// appliers returns new Appliers of both sides.
func (ob *onboardBed) appliers(t *testing.T) (a, b *applypg.Applier) {
	t.Helper()
	mk := func(name string, db *testenv.DB) *applypg.Applier {
		app, err := applypg.New(t.Context(), db.Pool, applypg.Config{Sync: ob.name, Target: name, Logger: ob.logger})
		require.NoError(t, err)
		t.Cleanup(func() { _ = app.DropOrigins(context.Background()) })
		return app
	}
	return mk("a", ob.a), mk("b", ob.b)
}

// sync returns a Sync of the bed over aApp and bApp (nil: new appliers),
// its slots created.
func (ob *onboardBed) sync(t *testing.T, tables []duplex.Table, res duplex.Resolver, aApp, bApp duplex.Applier, chunk int) *duplex.Sync {
	t.Helper()
	if aApp == nil {
		x, y := ob.appliers(t)
		aApp, bApp = x, y
	}
	src := func(name string, db *testenv.DB) duplex.ChangeSource {
		s, err := pglogical.New(t.Context(), pglogical.Config{ConnString: db.URL, Sync: ob.name, System: name, Tables: tables,
			SetReplicaIdentity: true, Logger: ob.logger})
		require.NoError(t, err)
		t.Cleanup(s.Close)
		require.NoError(t, s.Setup(t.Context(), false))
		return s
	}
	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name: ob.name, A: duplex.Endpoint{Name: "a", Source: src("a", ob.a), Applier: aApp},
		B:        duplex.Endpoint{Name: "b", Source: src("b", ob.b), Applier: bApp},
		Resolver: res, DeadLetters: ob.dlq, Logger: ob.logger,
		Onboarding: duplex.OnboardingConfig{Tables: tables, ChunkSize: chunk},
	})
	require.NoError(t, err)
	return s
}

// itemRows reads items as text rows by id.
func itemRows(t *testing.T, pool *pgxpool.Pool) map[int64]string {
	t.Helper()
	return textRows(t, pool, `SELECT id, row(name, email, status, tags, visits, updated_at AT TIME ZONE 'UTC')::text FROM items`)
}

// requireAgreedRecords checks that both sides hold a record of every key
// in ids, of one version, whose row is the row both hold.
func requireAgreedRecords(t *testing.T, a, b *applypg.Applier, table duplex.Table, ids []int64) {
	t.Helper()
	keys := make([]duplex.Key, len(ids))
	for i, id := range ids {
		keys[i] = duplex.Key{{Name: "id", Value: id}}
	}
	ra, err := a.Agreements(t.Context(), table, keys)
	require.NoError(t, err)
	rb, err := b.Agreements(t.Context(), table, keys)
	require.NoError(t, err)
	rows, err := a.Lookup(t.Context(), table, keys)
	require.NoError(t, err)
	for i, id := range ids {
		require.True(t, ra[i].Known && rb[i].Known, "id %d: records on a %v, b %v", id, ra[i].Known, rb[i].Known)
		require.Equal(t, ra[i].Version, rb[i].Version, "id %d", id)
		for f, v := range ra[i].Row {
			require.True(t, duplex.Equal(v, rows[i][f]), "id %d field %s: agreed %v, row %v", id, f, v, rows[i][f])
		}
	}
}

func ids(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// TestOnboardingOneSidedEqualAndDifferent: a holds 1-30, b 21-50; 21-25
// are equal, 26-30 differ (a changed name, b email and status). Rows on
// one side are copied, equal ones recorded as agreed, different ones
// decided by field authority; every key ends with records of one version
// on both sides, and a second Onboard finds nothing to do.
func TestOnboardingOneSidedEqualAndDifferent(t *testing.T) {
	t.Parallel()
	ob := newOnboardBed(t, itemsDDL)
	exec(t, ob.a.Pool, `INSERT INTO items (id, name, email) SELECT i, 'n' || i, 'e' || i FROM generate_series(1, 30) i`)
	exec(t, ob.b.Pool, `INSERT INTO items (id, name, email) SELECT i, 'n' || i, 'e' || i FROM generate_series(21, 50) i`)
	exec(t, ob.a.Pool, `UPDATE items SET name = 'a-name' WHERE id BETWEEN 26 AND 30`)
	exec(t, ob.b.Pool, `UPDATE items SET email = 'b-email', status = 'b-status' WHERE id BETWEEN 26 AND 30`)
	auth, err := resolve.ParseAuthority("items.name=a,items.email=b,items.status=b")
	require.NoError(t, err)
	aApp, bApp := ob.appliers(t)
	s := ob.sync(t, []duplex.Table{items}, duplex.Chain(auth, resolve.DeadLetterAll()), aApp, bApp, 7)
	ps, err := s.Onboard(t.Context())
	require.NoError(t, err)
	require.Len(t, ps, 1)
	p := ps[0]
	require.True(t, p.Done)
	require.Equal(t, [6]int64{50, 40, 5, 5, 0, 0}, [6]int64{p.Compared, p.Copied, p.Agreed, p.Decided, p.Held, p.Deferred}, "%+v", p)
	ra, rb := itemRows(t, ob.a.Pool), itemRows(t, ob.b.Pool)
	require.Len(t, ra, 50)
	require.Equal(t, ra, rb)
	for id := int64(26); id <= 30; id++ {
		require.True(t, strings.HasPrefix(ra[id], "(a-name,b-email,b-status,"), "id %d: %s", id, ra[id])
	}
	requireAgreedRecords(t, aApp, bApp, items, ids(1, 50))
	entries, _, err := ob.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	require.Empty(t, entries)

	// Done: a later start skips the table.
	ps, err = s.Onboard(t.Context())
	require.NoError(t, err)
	require.True(t, ps[0].Skipped)
}

// TestOnboardingResolverKinds: rows both sides hold differently are
// decided as a conflicting change would be, by each kind of resolver;
// what none decides is dead-lettered with both rows, both sides untouched
// and without records.
func TestOnboardingResolverKinds(t *testing.T) {
	t.Parallel()
	lww, err := resolve.NewLWW("updated_at", 0)
	require.NoError(t, err)
	auth, err := resolve.ParseAuthority("items.name=b")
	require.NoError(t, err)
	longer := duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
		for _, f := range c.Conflicting() {
			sv, _ := c.SourceValue(f)
			tv, _ := c.TargetValue(f)
			if len(fmt.Sprint(sv)) >= len(fmt.Sprint(tv)) {
				c.Take(f, "longer")
			} else {
				c.Keep(f, "longer")
			}
		}
		return nil
	})
	for _, tc := range []struct {
		kind     string
		resolver duplex.Resolver
		a, b     string // SET clauses making row 1 differ
		want     string // the row's text on both sides ("": held)
	}{
		{"authority", duplex.Chain(auth, resolve.DeadLetterAll()), "name = 'from-a'", "name = 'from-b'", "(from-b,e1,\"\",{},0,\"2026-01-01 00:00:00\")"},
		{"lww", duplex.Chain(lww, resolve.DeadLetterAll()), "name = 'from-a', updated_at = '2026-03-01'", "name = 'from-b', updated_at = '2026-02-01'", "(from-a,e1,\"\",{},0,\"2026-03-01 00:00:00\")"},
		{"merge", duplex.Chain(resolve.UnionTags("tags"), resolve.DeadLetterAll()), "tags = '{x,y}'", "tags = '{y,z}'", "(n1,e1,\"\",\"{x,y,z}\",0,\"2026-01-01 00:00:00\")"},
		{"custom", duplex.Chain(longer, resolve.DeadLetterAll()), "name = 'short'", "name = 'much-longer'", "(much-longer,e1,\"\",{},0,\"2026-01-01 00:00:00\")"},
		{"undecided", duplex.Chain(resolve.DeadLetterAll()), "name = 'from-a'", "name = 'from-b'", ""},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			ob := newOnboardBed(t, itemsDDL)
			for _, db := range []*testenv.DB{ob.a, ob.b} {
				exec(t, db.Pool, `INSERT INTO items (id, name, email) SELECT i, 'n' || i, 'e' || i FROM generate_series(1, 3) i`)
			}
			exec(t, ob.a.Pool, `UPDATE items SET `+tc.a+` WHERE id = 1`)
			exec(t, ob.b.Pool, `UPDATE items SET `+tc.b+` WHERE id = 1`)
			beforeA, beforeB := itemRows(t, ob.a.Pool), itemRows(t, ob.b.Pool)
			aApp, bApp := ob.appliers(t)
			s := ob.sync(t, []duplex.Table{items}, tc.resolver, aApp, bApp, 0)
			ps, err := s.Onboard(t.Context())
			require.NoError(t, err)
			p := ps[0]
			ra, rb := itemRows(t, ob.a.Pool), itemRows(t, ob.b.Pool)
			entries, _, err := ob.dlq.List(t.Context(), dlq.Filter{})
			require.NoError(t, err)
			if tc.want == "" {
				require.Equal(t, int64(1), p.Held)
				require.Equal(t, beforeA, ra, "a untouched")
				require.Equal(t, beforeB, rb, "b untouched")
				require.Len(t, entries, 1)
				c := entries[0].Conflict
				require.NotNil(t, c)
				require.Equal(t, "from-a", c.Source["name"])
				require.Equal(t, "from-b", c.Target["name"])
				// Both record the row with the contested field unknown, so a
				// later edit meets it as a conflict again.
				for _, app := range []*applypg.Applier{aApp, bApp} {
					recs, err := app.Agreements(t.Context(), items, []duplex.Key{{{Name: "id", Value: int64(1)}}})
					require.NoError(t, err)
					require.True(t, recs[0].Known)
					require.Equal(t, []string{"name"}, recs[0].Unknown)
					require.NotContains(t, recs[0].Row, "name")
				}
				requireAgreedRecords(t, aApp, bApp, items, ids(2, 3))
				return
			}
			require.Empty(t, entries)
			require.Equal(t, int64(1), p.Decided, "%+v", p)
			require.Equal(t, ra, rb)
			require.Equal(t, tc.want, ra[1])
			requireAgreedRecords(t, aApp, bApp, items, ids(1, 3))
		})
	}
}

// crashing is an Applier that dies at its system's share of a shared
// count of Apply calls: at call at it fails (before) or commits and then
// fails (after), and every later call fails, like a process killed there.
type crashing struct {
	*applypg.Applier
	calls *atomic.Int64
	at    int64
	after bool
}

var errKilled = errors.New("killed")

func (c *crashing) Apply(ctx context.Context, b *duplex.Batch) error {
	n := c.calls.Add(1)
	switch {
	case n < c.at:
		return c.Applier.Apply(ctx, b)
	case n == c.at && c.after:
		if err := c.Applier.Apply(ctx, b); err != nil {
			return err
		}
	}
	return duplex.Permanent(errKilled)
}

// TestOnboardingResumesAfterCrash kills onboarding at every commit of a
// run (before and after it commits; chunks of 10 keys, b's half then a's)
// and starts again: the restart goes on after the last chunk a committed
// (never from zero once a chunk committed), finishes a chunk b committed
// alone, and both sides end with the rows and records of a run without a
// crash, nothing copied twice and nothing dead-lettered.
func TestOnboardingResumesAfterCrash(t *testing.T) {
	t.Parallel()
	const chunk = 10
	seed := func(ob *onboardBed) {
		exec(t, ob.a.Pool, `INSERT INTO items (id, name, visits) SELECT i, 'a' || i, i FROM generate_series(1, 40) i`)
		exec(t, ob.b.Pool, `INSERT INTO items (id, name, visits) SELECT i, 'a' || i, i FROM generate_series(21, 60) i`)
		exec(t, ob.b.Pool, `UPDATE items SET name = 'b' || id WHERE id % 4 = 0`)
	}
	auth, err := resolve.ParseAuthority("items.name=b")
	require.NoError(t, err)
	res := duplex.Chain(auth, resolve.DeadLetterAll())
	// A run without a crash, for the expected rows.
	ref := newOnboardBed(t, itemsDDL)
	seed(ref)
	_, err = ref.sync(t, []duplex.Table{items}, res, nil, nil, chunk).Onboard(t.Context())
	require.NoError(t, err)
	want := itemRows(t, ref.a.Pool)
	require.Len(t, want, 60)
	require.Equal(t, want, itemRows(t, ref.b.Pool))

	// 60 keys in chunks of 10 (a's 40, then b's 20): 6 chunks, 12 commits.
	for at := int64(1); at <= 12; at++ {
		for _, after := range []bool{false, true} {
			t.Run(fmt.Sprintf("commit%d/after=%v", at, after), func(t *testing.T) {
				t.Parallel()
				ob := newOnboardBed(t, itemsDDL)
				seed(ob)
				aApp, bApp := ob.appliers(t)
				calls := &atomic.Int64{}
				s := ob.sync(t, []duplex.Table{items}, res,
					&crashing{Applier: aApp, calls: calls, at: at, after: after},
					&crashing{Applier: bApp, calls: calls, at: at, after: after}, chunk)
				_, err := s.Onboard(t.Context())
				require.ErrorIs(t, err, errKilled)
				// Commits that landed: at-1, plus the crashing one when after.
				landed := at - 1
				if after {
					landed++
				}
				aApp2, bApp2 := ob.appliers(t)
				ps, err := ob.sync(t, []duplex.Table{items}, res, aApp2, bApp2, chunk).Onboard(t.Context())
				require.NoError(t, err)
				p := ps[0]
				// a commits every second commit: the chunks a finished are not
				// compared again.
				finished := landed / 2
				require.Equal(t, int64(60-finished*chunk), p.Compared, "%+v", p)
				require.Equal(t, want, itemRows(t, ob.a.Pool))
				require.Equal(t, want, itemRows(t, ob.b.Pool))
				requireAgreedRecords(t, aApp2, bApp2, items, ids(1, 60))
				entries, _, err := ob.dlq.List(t.Context(), dlq.Filter{})
				require.NoError(t, err)
				require.Empty(t, entries)
			})
		}
	}
}

// TestOnboardingRefusesATableWithoutPrimaryKey: the error names the table
// and says what to do.
func TestOnboardingRefusesATableWithoutPrimaryKey(t *testing.T) {
	t.Parallel()
	ob := newOnboardBed(t, `CREATE TABLE nokey (id bigint, name text)`)
	aApp, bApp := ob.appliers(t)
	// No slot: pglogical refuses the table first; onboarding's own check is
	// the one tested here.
	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name: ob.name, A: duplex.Endpoint{Name: "a", Source: nopSource{}, Applier: aApp},
		B: duplex.Endpoint{Name: "b", Source: nopSource{}, Applier: bApp}, DeadLetters: ob.dlq, Logger: ob.logger,
		Onboarding: duplex.OnboardingConfig{Tables: []duplex.Table{{Schema: "public", Name: "nokey"}}},
	})
	require.NoError(t, err)
	_, err = s.Onboard(t.Context())
	require.Error(t, err)
	require.Contains(t, err.Error(), "public.nokey")
	require.Contains(t, err.Error(), "no primary key")
	require.True(t, duplex.IsPermanent(err), "%v", err)
}

// nopSource delivers nothing.
type nopSource struct{}

func (nopSource) Stream(ctx context.Context, _ duplex.Position, _ func(context.Context, []duplex.Change) error) error {
	<-ctx.Done()
	return nil
}

func (nopSource) Ack(context.Context, duplex.Position) error { return nil }

// TestOnboardingEmptyTable: nothing to compare, the table is done.
func TestOnboardingEmptyTable(t *testing.T) {
	t.Parallel()
	ob := newOnboardBed(t, itemsDDL)
	aApp, bApp := ob.appliers(t)
	ps, err := ob.sync(t, []duplex.Table{items}, nil, aApp, bApp, 0).Onboard(t.Context())
	require.NoError(t, err)
	require.Equal(t, duplex.OnboardingProgress{Table: items, Done: true, Elapsed: ps[0].Elapsed}, ps[0])
	ps, err = ob.sync(t, []duplex.Table{items}, nil, aApp, bApp, 0).Onboard(t.Context())
	require.NoError(t, err)
	require.True(t, ps[0].Skipped)
}

// TestOnboardingUnderLiveWrites starts a sync on two populated databases
// (a 1-2000, b 1001-3000, 1001-2000 equal) while writers on both sides
// edit rows: a sets name (which a owns), b status (b owns), both increment
// nothing else, and each inserts new rows. Every write lands once: at the
// end both sides hold the same rows, each row with the last name a wrote
// and the last status b wrote, and nothing is dead-lettered.
func TestOnboardingUnderLiveWrites(t *testing.T) {
	t.Parallel()
	auth, err := resolve.ParseAuthority("customers.name=a,customers.email=a,customers.status=b")
	require.NoError(t, err)
	var onboarded atomic.Bool
	done := make(chan struct{})
	p := startPairOf(t, []duplex.Table{customers}, duplex.Chain(auth, resolve.DeadLetterAll()), nil, 0, func(pool *pgxpool.Pool) {
		exec(t, pool, ddl)
	}, func(p *pair) {
		exec(t, p.a.Pool, `INSERT INTO customers (id, name, email, status) SELECT i, 'n' || i, 'e' || i, 'new' FROM generate_series(1, 2000) i`)
		exec(t, p.a.Pool, `UPDATE customers SET updated_at = '2026-01-01'`)
		exec(t, p.b.Pool, `INSERT INTO customers (id, name, email, status) SELECT i, 'n' || i, 'e' || i, 'new' FROM generate_series(1001, 3000) i`)
		exec(t, p.b.Pool, `UPDATE customers SET updated_at = '2026-01-01'`)
		p.onboarding = duplex.OnboardingConfig{Tables: []duplex.Table{customers}, ChunkSize: 100, Progress: func(op duplex.OnboardingProgress) {
			if op.Done && onboarded.CompareAndSwap(false, true) {
				close(done)
			}
		}}
	})
	type last struct {
		mu     sync.Mutex
		name   map[int64]string
		status map[int64]string
	}
	l := &last{name: map[int64]string{}, status: map[int64]string{}}
	var wg sync.WaitGroup
	writer := func(pool *pgxpool.Pool, side string, keys []int64, insertFrom int64) {
		defer wg.Done()
		after := 0 // writes since onboarding finished
		for i := 0; after < 200; i++ {
			if onboarded.Load() {
				after++
			}
			id := keys[(i*7919)%len(keys)]
			v := fmt.Sprintf("%s-%d", side, i)
			if side == "a" {
				exec(t, pool, `UPDATE customers SET name = $2 WHERE id = $1`, id, v)
				l.mu.Lock()
				l.name[id] = v
				l.mu.Unlock()
			} else {
				exec(t, pool, `UPDATE customers SET status = $2 WHERE id = $1`, id, v)
				l.mu.Lock()
				l.status[id] = v
				l.mu.Unlock()
			}
			if i%10 == 0 {
				exec(t, pool, `INSERT INTO customers (id, name, email, status) VALUES ($1, $2, 'new', $2)`, insertFrom+int64(i), v)
				l.mu.Lock()
				l.name[insertFrom+int64(i)], l.status[insertFrom+int64(i)] = v, v
				l.mu.Unlock()
			}
		}
	}
	wg.Add(2)
	go writer(p.a.Pool, "a", ids(1, 2000), 100000)
	go writer(p.b.Pool, "b", ids(1001, 3000), 200000)
	wg.Wait()
	<-done
	p.waitQuiet(t, 1)
	ra, rb := rowsOf(t, p.a.Pool), rowsOf(t, p.b.Pool)
	require.Equal(t, len(ra), len(rb))
	require.Equal(t, ra, rb)
	for id, row := range ra {
		parts := strings.Split(strings.Trim(row, "()"), ",")
		wantName, wantStatus := fmt.Sprintf("n%d", id), "new"
		if v, ok := l.name[id]; ok {
			wantName = v
		}
		if v, ok := l.status[id]; ok {
			wantStatus = v
		}
		require.Equal(t, wantName, parts[0], "id %d name: %s", id, row)
		require.Equal(t, wantStatus, parts[2], "id %d status: %s", id, row)
	}
	entries, _, err := p.dlq.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	if len(entries) > 0 {
		t.Fatalf("%d dead letters, the first: %s", len(entries), entries[0].Error)
	}
}

// TestOnboarding200kRows onboards 200,000 rows into an empty side, then
// compares the two populated sides again (DUPLEX_LONG=1: it takes longer
// than the CI suite should).
func TestOnboarding200kRows(t *testing.T) {
	if os.Getenv("DUPLEX_LONG") == "" {
		t.Skip("DUPLEX_LONG=1 runs it")
	}
	t.Parallel()
	ob := newOnboardBed(t, itemsDDL)
	exec(t, ob.a.Pool, `INSERT INTO items (id, name, email) SELECT i, 'n' || i, 'e' || i FROM generate_series(1, 200000) i`)
	exec(t, ob.a.Pool, `ANALYZE items`)
	aApp, bApp := ob.appliers(t)
	start := time.Now()
	ps, err := ob.sync(t, []duplex.Table{items}, nil, aApp, bApp, 0).Onboard(t.Context())
	require.NoError(t, err)
	t.Logf("copied %d rows in %s", ps[0].Copied, time.Since(start))
	require.Equal(t, int64(200000), ps[0].Copied)
	var n int64
	require.NoError(t, ob.b.Pool.QueryRow(t.Context(), `SELECT count(*) FROM items`).Scan(&n))
	require.Equal(t, int64(200000), n)
	require.Equal(t, itemRows(t, ob.a.Pool), itemRows(t, ob.b.Pool))
}

// TestReconcileTablesRepairsDrift: after onboarding, rows changed behind
// the sync's back (no stream runs) are found by the batched compare and
// repaired through the resolvers: a row missing on one side is copied
// back, a row changed on one side is decided, and the records move to a
// new version on both sides; a second pass finds nothing.
func TestReconcileTablesRepairsDrift(t *testing.T) {
	t.Parallel()
	ob := newOnboardBed(t, itemsDDL)
	for _, db := range []*testenv.DB{ob.a, ob.b} {
		exec(t, db.Pool, `INSERT INTO items (id, name, email) SELECT i, 'n' || i, 'e' || i FROM generate_series(1, 100) i`)
	}
	auth, err := resolve.ParseAuthority("items.name=a,items.email=b")
	require.NoError(t, err)
	aApp, bApp := ob.appliers(t)
	s := ob.sync(t, []duplex.Table{items}, duplex.Chain(auth, resolve.DeadLetterAll()), aApp, bApp, 30)
	ps, err := s.Onboard(t.Context())
	require.NoError(t, err)
	require.Equal(t, int64(100), ps[0].Agreed)
	exec(t, ob.a.Pool, `DELETE FROM items WHERE id = 5`)
	exec(t, ob.b.Pool, `UPDATE items SET name = 'b-drift', email = 'b-email' WHERE id = 7`)
	exec(t, ob.b.Pool, `INSERT INTO items (id, name) VALUES (1000, 'b-only')`)
	ps, err = s.ReconcileTables(t.Context(), []duplex.Table{items}, 30)
	require.NoError(t, err)
	p := ps[0]
	require.Equal(t, [4]int64{101, 2, 1, 0}, [4]int64{p.Compared, p.Copied, p.Decided, p.Held}, "%+v", p)
	ra, rb := itemRows(t, ob.a.Pool), itemRows(t, ob.b.Pool)
	require.Equal(t, ra, rb)
	require.True(t, strings.HasPrefix(ra[7], "(n7,b-email,"), ra[7])
	require.Contains(t, ra, int64(5))
	requireAgreedRecords(t, aApp, bApp, items, append(ids(1, 100), 1000))
	ps, err = s.ReconcileTables(t.Context(), []duplex.Table{items}, 30)
	require.NoError(t, err)
	require.Equal(t, [3]int64{0, 0, 0}, [3]int64{ps[0].Copied, ps[0].Decided, ps[0].Agreed}, "%+v", ps[0])
}

// TestOnboardingReadsAtTheSlotsSnapshot: both sides hold a row alike when
// their slots are created; then, before onboarding reads, a adds 2 to its
// counter and b adds 5. Onboarding reads at the snapshots exported with the
// slots, so it records the row as agreed (counter 0), and the two streamed
// increments merge through CounterDelta to 7 on both sides: no edit lost,
// none counted twice, nothing dead-lettered. (Reading the current rows
// instead would find 2 against 5 without a base, which CounterDelta cannot
// decide.)
func TestOnboardingReadsAtTheSlotsSnapshot(t *testing.T) {
	t.Parallel()
	ob := newOnboardBed(t, itemsDDL)
	for _, db := range []*testenv.DB{ob.a, ob.b} {
		exec(t, db.Pool, `INSERT INTO items (id, name) VALUES (1, 'n1')`)
	}
	s := ob.sync(t, []duplex.Table{items}, duplex.Chain(resolve.CounterDelta("visits"), resolve.DeadLetterAll()), nil, nil, 0)
	exec(t, ob.a.Pool, `UPDATE items SET visits = visits + 2 WHERE id = 1`)
	exec(t, ob.b.Pool, `UPDATE items SET visits = visits + 5 WHERE id = 1`)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	visits := func(pool *pgxpool.Pool) int64 {
		var v int64
		require.NoError(t, pool.QueryRow(t.Context(), `SELECT visits FROM items WHERE id = 1`).Scan(&v))
		return v
	}
	deadline := time.Now().Add(60 * time.Second)
	for visits(ob.a.Pool) != 7 || visits(ob.b.Pool) != 7 {
		entries, _, err := ob.dlq.List(t.Context(), dlq.Filter{})
		require.NoError(t, err)
		require.Empty(t, entries)
		if time.Now().After(deadline) {
			t.Fatalf("visits a=%d b=%d after 60s, want 7", visits(ob.a.Pool), visits(ob.b.Pool))
		}
		select {
		case err := <-done:
			t.Fatalf("sync stopped: %v", err)
		case <-time.After(50 * time.Millisecond): // polling interval
		}
	}
}
