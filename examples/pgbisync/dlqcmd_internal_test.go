package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
)

// TestDLQSubcommands runs -dlq list, show, a bulk dry run and a dismiss
// against an admin API over an in-memory queue, and checks the usage
// errors.
func TestDLQSubcommands(t *testing.T) {
	t.Parallel()
	store := dlq.NewMemory(dlq.MemoryConfig{})
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for i, cid := range []string{"c1", "c2", "c3"} {
		require.NoError(t, store.Put(t.Context(), &duplex.DeadLetter{
			Sync: "s", Direction: duplex.Direction{From: "a", To: "b"}, Reason: duplex.ReasonConflict, Error: "held by manual review", At: at,
			Change: duplex.Change{ID: cid, Op: duplex.OpUpdate, Table: duplex.Table{Schema: "public", Name: "customers"}, Key: duplex.Key{{Name: "id", Value: int64(7)}}},
			Conflict: &duplex.ConflictInfo{Kind: duplex.UpdateUpdate, Fields: []string{"email"}, Merge: true, DecidedBy: "manual",
				Base:   duplex.Values{"id": int64(7), "email": "old"},
				Source: duplex.Values{"id": int64(7), "email": "a" + cid}, Target: duplex.Values{"id": int64(7), "email": "b" + cid}},
		}), "put %d", i)
	}
	h, err := dlq.NewAdmin(dlq.AdminConfig{Store: store, Auth: dlq.NoAuth})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := mainExit(append([]string{"-admin", srv.URL}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}

	code, out, stderr := run("-dlq", "list", "-table", "public.customers")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `1\s+pending\s+3\s+public.customers\s+id=7\s+conflict\s+email`, out, "one entry for the held row, seen 3 times")
	require.Contains(t, out, "1 of 1 entries")

	code, out, stderr = run("-dlq", "show", "-id", "1")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "entry 1: public.customers id=7, conflict, pending")
	require.Regexp(t, `!\s+email\s+"old"\s+"ac3"\s+"bc3"`, out, "the newest versions, with the base")
	require.Contains(t, out, "2 superseded versions kept")

	code, out, _ = run("-dlq", "show", "-id", "1", "-json")
	require.Equal(t, 0, code)
	require.Contains(t, out, `"table": "public.customers"`)

	code, out, stderr = run("-dlq", "resolve", "-winner", "a", "-field", "email", "-dry-run")
	require.Equal(t, 0, code, stderr)
	require.Equal(t, "dry run: 1 pending entries match; resolve for a would act on them\n", out)

	code, _, stderr = run("-dlq", "resolve", "-winner", "a", "-id", "1")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "501", "no Actions behind this admin server")

	code, out, stderr = run("-dlq", "dismiss", "-older-than", "1h")
	require.Equal(t, 0, code, stderr)
	require.Equal(t, "bulk dismiss: 1 of 1 pending entries done, 0 failed\n", out)

	for _, bad := range [][]string{
		{"-dlq", "explode"}, {"-dlq", "show"}, {"-dlq", "resolve", "-id", "1"}, {"-dlq", "retry"},
		{"-dlq", "dismiss", "-id", "1", "-table", "x"},
	} {
		code, _, stderr = run(bad...)
		require.Equal(t, 1, code, strings.Join(bad, " "))
		require.Contains(t, stderr, "pgbisync -dlq:")
	}
	code, _, _ = run("-dlq", "list", "-nope")
	require.Equal(t, 2, code)
}

// keyActions answers the admin's actions as a sync that keeps both rows
// under new keys would: keys drawn from 7 on.
type keyActions struct{ moves []string }

func (k *keyActions) Retry(context.Context, *dlq.Entry) (duplex.ActionResult, error) {
	return duplex.ActionResult{Outcome: duplex.OutcomeApplied}, nil
}

func (k *keyActions) Resolve(context.Context, *dlq.Entry, string) (duplex.ActionResult, error) {
	return duplex.ActionResult{Outcome: duplex.OutcomeApplied}, nil
}

func (k *keyActions) NewKey(context.Context, *dlq.Entry, string) (duplex.Key, error) {
	return duplex.Key{{Name: "id", Value: int64(7)}}, nil
}

func (k *keyActions) KeepBoth(_ context.Context, _ *dlq.Entry, move string, key duplex.Key) (duplex.ActionResult, error) {
	k.moves = append(k.moves, move+":"+key.String())
	return duplex.ActionResult{Outcome: duplex.OutcomeApplied, Detail: move + "'s row is " + key.String() + " on both sides"}, nil
}

// TestDLQKeepBothAndUniqueCollision: -dlq keep-both -move b posts the
// action; -dlq show prints a unique collision's constraint and both keys.
func TestDLQKeepBothAndUniqueCollision(t *testing.T) {
	t.Parallel()
	store := dlq.NewMemory(dlq.MemoryConfig{})
	customers := duplex.Table{Schema: "public", Name: "customers"}
	require.NoError(t, store.Put(t.Context(), &duplex.DeadLetter{
		Sync: "s", Direction: duplex.Direction{From: "a", To: "b"}, Reason: duplex.ReasonConflict, Error: "held",
		Change:   duplex.Change{ID: "c1", Op: duplex.OpInsert, Table: customers, Key: duplex.Key{{Name: "id", Value: int64(1)}}},
		Conflict: &duplex.ConflictInfo{Kind: duplex.InsertInsert, Fields: []string{"name"}, Merge: true},
	}))
	require.NoError(t, store.Put(t.Context(), &duplex.DeadLetter{
		Sync: "s", Direction: duplex.Direction{From: "a", To: "b"}, Reason: duplex.ReasonConflict, Error: "unique collision",
		Change: duplex.Change{ID: "c2", Op: duplex.OpInsert, Table: customers, Key: duplex.Key{{Name: "id", Value: int64(10)}}},
		Conflict: &duplex.ConflictInfo{Kind: duplex.UniqueCollision, Fields: []string{"email"},
			Unique: &duplex.UniqueInfo{Constraint: "customers_email_key", Columns: []string{"email"}, Values: duplex.Values{"email": "ann@x"},
				HolderKey: duplex.Key{{Name: "id", Value: int64(20)}}}},
	}))
	ka := &keyActions{}
	h, err := dlq.NewAdmin(dlq.AdminConfig{Store: store, Actions: ka, Auth: dlq.NoAuth})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := mainExit(append([]string{"-admin", srv.URL}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, _, stderr := run("-dlq", "keep-both", "-id", "1")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "needs -move a or b")

	code, out, stderr := run("-dlq", "keep-both", "-id", "1", "-move", "b")
	require.Equal(t, 0, code, stderr)
	require.Equal(t, "kept both of entry 1: applied (b's row is id=7 on both sides)\n", out)
	require.Equal(t, []string{"b:id=7"}, ka.moves)

	code, out, stderr = run("-dlq", "show", "-id", "2")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, `unique constraint customers_email_key (email="ann@x"): a's row id=10 collides with b's row id=20`)
}
