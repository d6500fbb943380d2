package applypg_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/agree/agreetest"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/apply/applytest"
	"github.com/duplexsync/duplex/internal/pgutil"
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

// newApplier returns an Applier of sync on db; its origins are dropped when
// the test ends.
func newApplier(t testing.TB, db *testenv.DB, sync string, mod ...func(*applypg.Config)) *applypg.Applier {
	t.Helper()
	cfg := applypg.Config{Sync: sync, Target: "b", Logger: logger(t)}
	for _, f := range mod {
		f(&cfg)
	}
	a, err := applypg.New(t.Context(), db.Pool, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.DropOrigins(ctx); err != nil {
			t.Errorf("drop origins: %v", err)
		}
	})
	return a
}

func exec(t testing.TB, db *testenv.DB, sql string, args ...any) {
	t.Helper()
	_, err := db.Pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err, sql)
}

// ---- conformance ----

func TestConformance(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	for _, m := range []applypg.Method{applypg.MethodUnnest, applypg.MethodRows, applypg.MethodValues, applypg.MethodCopy} {
		t.Run(m.String(), func(t *testing.T) {
			t.Parallel()
			applytest.Run(t, applytest.Features{Checkpoints: true, Expectations: true, Ledger: true, Agreements: true}, func(t *testing.T) applytest.Harness {
				return newHarness(t, db, m)
			})
		})
	}
}

type harness struct {
	t      *testing.T
	db     *testenv.DB
	table  duplex.Table
	sync   string
	method applypg.Method
}

func newHarness(t *testing.T, db *testenv.DB, m applypg.Method) *harness {
	name := testenv.UniqueName(t, "items")
	h := &harness{t: t, db: db, table: duplex.Table{Schema: "public", Name: name}, sync: testenv.UniqueName(t, "s"), method: m}
	exec(t, db, "CREATE TABLE "+pgutil.QuoteTable(h.table)+
		" (id bigint PRIMARY KEY, name text NOT NULL, n bigint NOT NULL CHECK (n >= 0), note text)")
	return h
}

func (h *harness) Applier() duplex.Applier {
	return newApplier(h.t, h.db, h.sync, func(c *applypg.Config) { c.Method = h.method })
}

func (h *harness) Table() duplex.Table { return h.table }

func (h *harness) Row(ctx context.Context, id int64) (duplex.Values, error) {
	var name string
	var n int64
	var note *string
	err := h.db.Pool.QueryRow(ctx, "SELECT name, n, note FROM "+pgutil.QuoteTable(h.table)+" WHERE id = $1", id).Scan(&name, &n, &note)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	row := duplex.Values{"id": id, "name": name, "n": n, "note": nil}
	if note != nil {
		row["note"] = *note
	}
	return row, nil
}

func (h *harness) UserUpdate(ctx context.Context, id int64, set duplex.Values) error {
	var cols []string
	var args []any
	for f, v := range set {
		args = append(args, v)
		cols = append(cols, fmt.Sprintf("%s = $%d", pgutil.QuoteIdent(f), len(args)))
	}
	args = append(args, id)
	tag, err := h.db.Pool.Exec(ctx, fmt.Sprintf("UPDATE %s SET %s WHERE id = $%d", pgutil.QuoteTable(h.table), strings.Join(cols, ", "), len(args)), args...)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("user update of id %d: no such row", id)
	}
	return err
}

// requireBatchError checks err is a permanent *duplex.BatchError for write
// index with SQLSTATE code.
func requireBatchError(t *testing.T, err error, index int, code string) {
	t.Helper()
	require.Error(t, err)
	var be *duplex.BatchError
	require.ErrorAs(t, err, &be, "a BatchError names the write: %v", err)
	require.Equal(t, index, be.Index, "BatchError.Index: %v", err)
	require.True(t, duplex.IsPermanent(err), "permanent: %v", err)
	require.Equal(t, code, pgutil.SQLState(err), "SQLSTATE: %v", err)
	require.NotErrorIs(t, err, duplex.ErrStale)
}

// ---- batches ----

func itemsRow(t *testing.T, db *testenv.DB, id int64) duplex.Values {
	t.Helper()
	var name string
	var n int64
	var note *string
	err := db.Pool.QueryRow(t.Context(), "SELECT name, n, note FROM items WHERE id = $1", id).Scan(&name, &n, &note)
	if err == pgx.ErrNoRows {
		return nil
	}
	require.NoError(t, err)
	r := duplex.Values{"id": id, "name": name, "n": n, "note": nil}
	if note != nil {
		r["note"] = *note
	}
	return r
}

func count(t *testing.T, db *testenv.DB, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, db.Pool.QueryRow(t.Context(), sql, args...).Scan(&n), sql)
	return n
}

// TestCheckViolationNamesTheWrite: one write of a large batch breaks a
// CHECK constraint. Every method reports that write in a permanent
// BatchError, and nothing of the batch (rows, ledger, checkpoint) is kept.
func TestCheckViolationNamesTheWrite(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	exec(t, db, itemsDDL)
	exec(t, db, "INSERT INTO items SELECT g, 'old', g, NULL FROM generate_series(1000, 1199) g")
	for _, m := range []applypg.Method{applypg.MethodUnnest, applypg.MethodRows, applypg.MethodValues, applypg.MethodCopy} {
		t.Run(m.String(), func(t *testing.T) {
			a := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Method = m })
			for _, bad := range []int{0, 57, 299} {
				var writes []duplex.Write
				for i := range 300 {
					id := int64(i)
					switch {
					case i%3 == 0 && i != bad:
						writes = append(writes, ins(id, "new", 1))
					case i%3 == 0:
						writes = append(writes, ins(id, "new", -1))
					case i%3 == 1:
						n := int64(5)
						if i == bad {
							n = -5
						}
						writes = append(writes, upd(1000+id%100, duplex.Values{"n": n}, nil))
					default:
						writes = append(writes, del(1100+id%100))
					}
				}
				if bad%3 == 2 { // a delete cannot break the CHECK: make it an update
					writes[bad] = upd(1000+int64(bad)%100, duplex.Values{"n": int64(-1)}, nil)
				}
				err := a.Apply(ctx, &duplex.Batch{Source: "a", Checkpoint: "0/9", Writes: writes})
				requireBatchError(t, err, bad, "23514")
				require.Equal(t, 0, count(t, db, "SELECT count(*) FROM items WHERE id < 1000"), "no insert kept")
				require.Equal(t, 200, count(t, db, "SELECT count(*) FROM items WHERE id >= 1000 AND name = 'old' AND n = id"), "no update or delete kept")
				cp, err := a.Checkpoint(ctx, "a")
				require.NoError(t, err)
				require.Empty(t, cp, "no checkpoint kept")
				applied, err := a.Applied(ctx, []string{writes[0].Change.ID, writes[1].Change.ID})
				require.NoError(t, err)
				require.Equal(t, []bool{false, false}, applied, "no ledger entry kept")
			}
			requireClean(t, db)
		})
	}
}

// TestAmbiguousCommit: the connection breaks after COMMIT reached the
// server. Apply fails with an error that is not permanent nor a
// BatchError; the ledger and the checkpoint tell the batch committed.
func TestAmbiguousCommit(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	exec(t, db, itemsDDL)
	pool, f := faultyPool(t, db)
	a := newApplier(t, &testenv.DB{URL: db.URL, Name: db.Name, Pool: pool}, testenv.UniqueName(t, "s"))
	batch := &duplex.Batch{Source: "a", Checkpoint: "0/42", Writes: []duplex.Write{ins(1, "x", 1), ins(2, "y", 2), upd(1, duplex.Values{"n": int64(3)}, nil)}}
	ids := []string{batch.Writes[0].Change.ID, batch.Writes[1].Change.ID, batch.Writes[2].Change.ID}

	f.arm(loseCommitAck)
	err := a.Apply(ctx, batch)
	require.Error(t, err)
	require.Equal(t, int32(1), f.fired.Load())
	require.False(t, duplex.IsPermanent(err), "%v", err)
	require.NotErrorIs(t, err, duplex.ErrStale)
	var be *duplex.BatchError
	require.False(t, errors.As(err, &be), "an unknown outcome names no write: %v", err)
	require.True(t, duplex.IsUnavailable(err), "a broken connection is an outage: %v", err)

	// COMMIT was sent; whether the server ran it before Apply terminated the
	// broken session depends on timing (usually it did). Either way, as soon
	// as Apply returned, the ledger, the checkpoint and the rows agree.
	applied, err := a.Applied(ctx, ids)
	require.NoError(t, err)
	cp, err := a.Checkpoint(ctx, "a")
	require.NoError(t, err)
	if applied[0] {
		require.Equal(t, []bool{true, true, true}, applied, "all or nothing")
		require.Equal(t, duplex.Position("0/42"), cp)
		require.Equal(t, duplex.Values{"id": int64(1), "name": "x", "n": int64(3), "note": nil}, itemsRow(t, db, 1))
	} else {
		t.Log("the terminated session had not committed yet: the batch rolled back")
		require.Equal(t, []bool{false, false, false}, applied, "all or nothing")
		require.Empty(t, cp)
		require.Nil(t, itemsRow(t, db, 1))
		require.NoError(t, a.Apply(ctx, batch), "applying again")
	}

	// A batch that was rolled back by a killed connection is not in the
	// ledger.
	batch2 := &duplex.Batch{Source: "a", Checkpoint: "0/43", Writes: []duplex.Write{ins(5, "z", 1)}}
	f.arm(killBeforeCommit)
	err = a.Apply(ctx, batch2)
	require.Error(t, err)
	require.True(t, duplex.IsUnavailable(err), "%v", err)
	applied, err = a.Applied(ctx, []string{batch2.Writes[0].Change.ID})
	require.NoError(t, err)
	require.Equal(t, []bool{false}, applied)
	require.Nil(t, itemsRow(t, db, 5))
	cp, err = a.Checkpoint(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, duplex.Position("0/42"), cp)
	require.NoError(t, a.Apply(ctx, batch2), "the applier recovers")
	require.NotNil(t, itemsRow(t, db, 5))
}

// requireEventually polls cond until it holds or timeout passes.
func requireEventually(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting: %s", what)
		case <-tick.C:
		}
	}
}

// TestRepeatedIDs applies a batch whose change IDs are partly in the
// ledger already (as when a batch is sent again after it committed): the
// ledger takes the new IDs, the batch commits, with every method.
func TestRepeatedIDs(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	exec(t, db, itemsDDL)
	for i, m := range methods {
		t.Run(m.String(), func(t *testing.T) {
			a := newApplier(t, db, testenv.UniqueName(t, "s"), func(c *applypg.Config) { c.Method = m })
			id := int64(10 * (i + 1))
			first := ins(id, "x", 1)
			require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Checkpoint: "0/1", Writes: []duplex.Write{first}}))

			again := upd(id, duplex.Values{"n": int64(2)}, duplex.Values{"n": int64(1)})
			again.Change = first.Change // the ID is in the ledger
			next := ins(id+1, "y", 1)
			require.NoError(t, a.Apply(ctx, &duplex.Batch{Source: "a", Checkpoint: "0/2", Writes: []duplex.Write{again, next}}))
			applied, err := a.Applied(ctx, []string{first.Change.ID, next.Change.ID, "other"})
			require.NoError(t, err)
			require.Equal(t, []bool{true, true, false}, applied)
			require.Equal(t, int64(2), itemsRow(t, db, id)["n"])
			require.NotNil(t, itemsRow(t, db, id+1))
			cp, err := a.Checkpoint(ctx, "a")
			require.NoError(t, err)
			require.Equal(t, duplex.Position("0/2"), cp)
		})
	}
}

// The agreement records an Applier keeps pass the agreement conformance suite.
func TestAgreementRecordsConformance(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	agreetest.Run(t, func(t *testing.T) duplex.AgreementStore {
		return agreetest.KeeperStore(newApplier(t, db, testenv.UniqueName(t, "s")))
	})
}

// TestLookupOddTextKeys: keys with quotes, backslashes, commas, braces,
// spaces, NULL-looking text and non-ASCII letters are looked up (rows and
// records) as themselves.
func TestLookupOddTextKeys(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	exec(t, db, `CREATE TABLE odd (k text PRIMARY KEY, v int NOT NULL)`)
	a := newApplier(t, db, "odd")
	tbl := duplex.Table{Schema: "public", Name: "odd"}
	texts := []string{`a"b`, `back\slash`, `c,d`, `{e}`, ` f `, `NULL`, ``, `größe`, `"`, `\`}
	var writes []duplex.Write
	var records []duplex.AgreementWrite
	keys := make([]duplex.Key, 0, len(texts)+1)
	for i, s := range texts {
		k := duplex.Key{{Name: "k", Value: s}}
		keys = append(keys, k)
		writes = append(writes, duplex.Write{Op: duplex.OpInsert, Table: tbl, Key: k, Set: duplex.Values{"k": s, "v": int64(i)},
			Change: &duplex.Change{ID: fmt.Sprintf("odd:%d", i)}})
		records = append(records, duplex.AgreementWrite{Table: tbl, Key: k, Agreement: duplex.Agreement{Known: true, Version: uint64(i + 1), Row: duplex.Values{"k": s, "v": int64(i)}}})
	}
	require.NoError(t, a.Apply(t.Context(), &duplex.Batch{Source: "a", Writes: writes, Agreements: records}))
	keys = append(keys, duplex.Key{{Name: "k", Value: "absent"}})
	rows, ags, err := a.LookupAgreements(t.Context(), tbl, keys)
	require.NoError(t, err)
	for i, s := range texts {
		require.Equal(t, duplex.Values{"k": s, "v": int64(i)}, rows[i], "row of %q", s)
		require.True(t, ags[i].Known, "record of %q", s)
		require.Equal(t, uint64(i+1), ags[i].Version, "record of %q", s)
	}
	require.Nil(t, rows[len(texts)])
	require.False(t, ags[len(texts)].Known)
}
