package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/crashpoint"
)

var orders = duplex.Table{Schema: "public", Name: "orders"}

// sameIDPair starts a pair syncing orders (keyed by a bigserial unless
// keyDDL says otherwise), inserts a different order on each side while
// the sync is stopped (both sequences hand out id 1), restarts it and
// waits for the one entry holding key 1 (put by both directions). It
// returns the pair and an admin server over its DLQ and Sync.
func sameIDPair(t *testing.T, keyDDL string, opts ...func(*pair)) (*pair, dlq.Entry, *httptest.Server) {
	t.Helper()
	return sameIDPairOf(t, "id "+keyDDL+" PRIMARY KEY, name text NOT NULL", [2]string{"ann's order on a", "bob's order on b"}, opts...)
}

// sameIDPairOf is sameIDPair with the columns of orders and the names
// inserted on a and b given.
func sameIDPairOf(t *testing.T, columns string, names [2]string, opts ...func(*pair)) (*pair, dlq.Entry, *httptest.Server) {
	t.Helper()
	schema := func(pool *pgxpool.Pool) {
		exec(t, pool, `CREATE TABLE orders (`+columns+`)`)
	}
	p := startPairOf(t, []duplex.Table{orders}, nil, nil, 0, schema, opts...)
	p.halt(t)
	insert := `INSERT INTO orders (name) VALUES ($1)`
	if strings.HasPrefix(columns, "id bigint ") {
		insert = `INSERT INTO orders (id, name) VALUES (1, $1)`
	}
	exec(t, p.a.Pool, insert, names[0])
	exec(t, p.b.Pool, insert, names[1])
	p.start(t)
	var e dlq.Entry
	waitFor(t, "one entry for key 1 from both directions", p, func() bool {
		es := allEntries(t, p)
		if len(es) == 1 {
			e = es[0]
		}
		return len(es) == 1 && es[0].Count >= 2
	})
	require.Equal(t, duplex.InsertInsert, e.Conflict.Kind)
	require.Equal(t, "id=1", e.Key())
	return p, e, adminServer(t, p)
}

func adminServer(t *testing.T, p *pair) *httptest.Server {
	t.Helper()
	h, err := dlq.NewAdmin(dlq.AdminConfig{Store: p.dlq, Actions: dlq.SyncActions(p.sync), Auth: dlq.NoAuth, Logger: p.logger})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// keepBoth posts keep-both of entry id for side move and returns the
// status and the message (or error) of the answer.
func keepBoth(t *testing.T, srv *httptest.Server, id int64, move string) (int, string) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("%s/dlq/%d/keep-both?move=%s", srv.URL, id, move), "", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var rep struct {
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	require.NoError(t, json.Unmarshal(body, &rep), string(body))
	return resp.StatusCode, rep.Message + rep.Error
}

func orderRows(t *testing.T, pool *pgxpool.Pool) map[int64]string {
	t.Helper()
	return textRows(t, pool, "SELECT id, name FROM orders")
}

// TestKeepBothUnderNewKeys: both sides' sequences gave id 1 to two
// different orders before the sync ran; the DLQ holds key 1. Keep both
// (POST /dlq/{id}/keep-both?move=b) gives b's order a new key from b's
// sequence on both sides: both orders exist on both sides, the entry is
// resolved, and later edits of either order flow without a new entry.
func TestKeepBothUnderNewKeys(t *testing.T) {
	t.Parallel()
	p, e, srv := sameIDPair(t, "bigserial")
	status, msg := keepBoth(t, srv, e.ID, "b")
	require.Equal(t, http.StatusOK, status, msg)
	t.Log(msg)
	want := map[int64]string{1: "ann's order on a", 2: "bob's order on b"}
	require.Equal(t, want, orderRows(t, p.a.Pool))
	require.Equal(t, want, orderRows(t, p.b.Pool))
	got, err := p.dlq.Get(t.Context(), e.ID)
	require.NoError(t, err)
	require.Equal(t, dlq.StatusResolved, got.Status)
	require.Equal(t, "kept both: b's row is id=2", got.Resolution)

	status, msg = keepBoth(t, srv, e.ID, "b")
	require.Equal(t, http.StatusOK, status, msg)
	require.Contains(t, msg, "already resolved")

	exec(t, p.a.Pool, `UPDATE orders SET name = 'bob, edited on a' WHERE id = 2`)
	exec(t, p.b.Pool, `UPDATE orders SET name = 'ann, edited on b' WHERE id = 1`)
	want = map[int64]string{1: "ann, edited on b", 2: "bob, edited on a"}
	waitFor(t, "the edits on both sides", p, func() bool {
		return fmt.Sprint(orderRows(t, p.a.Pool)) == fmt.Sprint(want) && fmt.Sprint(orderRows(t, p.b.Pool)) == fmt.Sprint(want)
	})
	require.Len(t, allEntries(t, p), 1, "no new entry")
}

// TestKeepBothNotOfferedWithoutSequence: the same collision on a key no
// sequence feeds; keep both answers 409 saying why and what to do, and
// writes nothing; so does keep both on a row changed on both sides and
// on a unique collision.
func TestKeepBothNotOfferedWithoutSequence(t *testing.T) {
	t.Parallel()
	p, e, srv := sameIDPair(t, "bigint")
	status, msg := keepBoth(t, srv, e.ID, "b")
	require.Equal(t, http.StatusConflict, status, msg)
	require.Contains(t, msg, "is not fed by a sequence or identity column")
	require.Contains(t, msg, "give the row a new key by hand")
	require.Equal(t, map[int64]string{1: "ann's order on a"}, orderRows(t, p.a.Pool))
	require.Equal(t, map[int64]string{1: "bob's order on b"}, orderRows(t, p.b.Pool))
	got, err := p.dlq.Get(t.Context(), e.ID)
	require.NoError(t, err)
	require.Equal(t, dlq.StatusPending, got.Status)

	changedOnBoth := e
	changedOnBoth.Conflict = &duplex.ConflictInfo{Kind: duplex.UpdateUpdate, Fields: []string{"name"}, Merge: true}
	_, err = p.sync.NewKey(t.Context(), &changedOnBoth.DeadLetter, "b")
	require.ErrorIs(t, err, duplex.ErrNotOffered)
	require.Contains(t, err.Error(), "one row changed on both sides")

	unique := e
	unique.Conflict = &duplex.ConflictInfo{Kind: duplex.UniqueCollision, Fields: []string{"name"},
		Unique: &duplex.UniqueInfo{Constraint: "orders_name_key", Columns: []string{"name"}, Values: duplex.Values{"name": "x"}, HolderKey: duplex.Key{{Name: "id", Value: int64(7)}}}}
	_, err = p.sync.NewKey(t.Context(), &unique.DeadLetter, "b")
	require.ErrorIs(t, err, duplex.ErrNotOffered)
	require.Contains(t, err.Error(), "change name on one of the two rows")
}

// TestKeepBothSameUniqueValue: the two rows under one key also share a
// unique value (email, by its default); keep both answers 409 saying that
// value must change first, and writes nothing. Once it changed on one
// side, keep both works (from the stopped sync).
func TestKeepBothSameUniqueValue(t *testing.T) {
	t.Parallel()
	p, e, srv := sameIDPairOf(t, "id bigserial PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE DEFAULT 'same@x'",
		[2]string{"ann's order on a", "bob's order on b"})
	status, msg := keepBoth(t, srv, e.ID, "b")
	require.Equal(t, http.StatusConflict, status, msg)
	require.Contains(t, msg, `the two rows share email="same@x" under unique constraint orders_email_key`)
	require.Equal(t, map[int64]string{1: "bob's order on b"}, orderRows(t, p.b.Pool), "nothing written")
	// Changed on b while the sync is stopped (a two-way merge of an
	// insert-insert row merges what it can from a guessed base), keep both
	// works.
	p.halt(t)
	exec(t, p.b.Pool, `UPDATE orders SET email = 'bob@x' WHERE id = 1`)
	status, msg = keepBoth(t, srv, e.ID, "b")
	require.Equal(t, http.StatusOK, status, msg)
	want := map[int64]string{1: "ann's order on a", 3: "bob's order on b"}
	require.Equal(t, want, orderRows(t, p.a.Pool))
	require.Equal(t, want, orderRows(t, p.b.Pool))
}

// TestKeepBothCrashPoints kills keep both at each of its two commits
// (b's move, a's insert), before and after the commit, with the sync
// stopped; keep both again finishes with the key drawn the first time:
// both orders on both sides, no third row, one key drawn from b's
// sequence. The sync then runs on with nothing new in the DLQ.
func TestKeepBothCrashPoints(t *testing.T) {
	t.Parallel()
	for _, at := range []int{1, 2} {
		for _, after := range []bool{false, true} {
			t.Run(fmt.Sprintf("at=%d/after=%v", at, after), func(t *testing.T) {
				t.Parallel()
				c := crashpoint.New()
				p, e, srv := sameIDPair(t, "bigserial", func(p *pair) {
					p.applier = func(_ string, a *applypg.Applier) duplex.Applier { return c.Wrap(a) }
				})
				p.halt(t)
				c.Arm(at, after, nil)
				status, msg := keepBoth(t, srv, e.ID, "b")
				require.NotEqual(t, http.StatusOK, status, msg)
				require.Contains(t, msg, "crash point")
				t.Log(msg)
				got, err := p.dlq.Get(t.Context(), e.ID)
				require.NoError(t, err)
				require.Equal(t, dlq.StatusPending, got.Status)
				require.Contains(t, got.Resolution, "keep-both move=b new_key=id=2", "the key drawn is kept for the next try")

				c.Disarm()
				status, msg = keepBoth(t, srv, e.ID, "b")
				require.Equal(t, http.StatusOK, status, msg)
				t.Log(msg)
				want := map[int64]string{1: "ann's order on a", 2: "bob's order on b"}
				require.Equal(t, want, orderRows(t, p.a.Pool))
				require.Equal(t, want, orderRows(t, p.b.Pool))
				require.Equal(t, 2, count(t, p.b.Pool, "SELECT last_value::int FROM orders_id_seq"), "one key drawn from b's sequence")

				p.start(t)
				exec(t, p.a.Pool, `UPDATE orders SET name = 'bob, edited on a' WHERE id = 2`)
				waitFor(t, "the edit on b", p, func() bool { return orderRows(t, p.b.Pool)[2] == "bob, edited on a" })
				require.Len(t, allEntries(t, p), 1, "no new entry")
			})
		}
	}
}
