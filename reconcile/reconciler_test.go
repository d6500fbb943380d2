package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/reconcile"
)

type call struct {
	table duplex.Table
	key   string
}

// TestReconcilerRepairsEachDifferingKeyOnce: updates, rows on one side
// only (both sides), in ranges larger than a page: Repair is called once per
// differing key, in key order per page, and the report counts outcomes.
func TestReconcilerRepairsEachDifferingKeyOnce(t *testing.T) {
	t.Parallel()
	a, b := twoDBs(t, itemsDDL)
	exec(t, a.Pool, seedItems, 1000)
	exec(t, b.Pool, seedItems, 1000)
	exec(t, b.Pool, `UPDATE items SET price = price + 1 WHERE id IN (3, 250, 999)`)
	exec(t, b.Pool, `DELETE FROM items WHERE id IN (400, 401)`)
	exec(t, a.Pool, `DELETE FROM items WHERE id = 402`)
	exec(t, b.Pool, `INSERT INTO items (id, name) VALUES (1500, 'b'), (1501, 'b')`)
	exec(t, a.Pool, `INSERT INTO items (id, name) VALUES (1502, 'a')`)
	c := newChecker(t, a.Pool, b.Pool, 300, items)
	r, err := c.CheckTable(t.Context(), items)
	require.NoError(t, err)
	// A's keys make the ranges (-inf,300] (300,601] (601,901] (901,1502];
	// B's extra keys 1500 and 1501 fall in the last one.
	require.Equal(t, "[(-inf, id=300] (id=300, id=601] (id=901, id=1502]]", fmt.Sprint(r.Mismatched))
	var calls []call
	rec, err := reconcile.NewReconciler(c, reconcile.ReconcilerConfig{
		ChunkSize: 64, MaxKeys: 3, Logger: logger(t),
		Repair: func(_ context.Context, table duplex.Table, key duplex.Key) (duplex.ActionResult, error) {
			calls = append(calls, call{table, key.String()})
			if key.String() == "id=250" {
				return duplex.ActionResult{Outcome: duplex.OutcomeDeadLettered, Detail: "nobody decided"}, nil
			}
			return duplex.ActionResult{Outcome: duplex.OutcomeApplied, Detail: "copied"}, nil
		},
	})
	require.NoError(t, err)
	rr, err := rec.Reconcile(t.Context(), r)
	require.NoError(t, err)
	want := []call{
		{items, "id=3"}, {items, "id=250"},
		{items, "id=400"}, {items, "id=401"}, {items, "id=402"},
		{items, "id=999"},
		{items, "id=1500"}, {items, "id=1501"}, {items, "id=1502"},
	}
	require.ElementsMatch(t, want, calls)
	require.Equal(t, 9, rr.Differing)
	require.Equal(t, len(r.Mismatched), rr.Ranges)
	require.Equal(t, map[duplex.Outcome]int{duplex.OutcomeApplied: 8, duplex.OutcomeDeadLettered: 1}, rr.Outcomes)
	require.Len(t, rr.Keys, 3, "MaxKeys bounds the list")
	require.Equal(t, items, rr.Table)
	kinds := map[string]reconcile.DiffKind{}
	require.NoError(t, rec.Diff(t.Context(), r, func(_ context.Context, d reconcile.Difference) error {
		kinds[d.Key.String()] = d.Kind
		return nil
	}))
	require.Equal(t, map[string]reconcile.DiffKind{
		"id=3": reconcile.DiffValues, "id=250": reconcile.DiffValues, "id=999": reconcile.DiffValues,
		"id=400": reconcile.OnlyA, "id=401": reconcile.OnlyA, "id=402": reconcile.OnlyB,
		"id=1500": reconcile.OnlyB, "id=1501": reconcile.OnlyB, "id=1502": reconcile.OnlyA,
	}, kinds)
}

// TestReconcilerGoesOnAfterAFailedRepair: one key's repair fails; the
// others are repaired and the error names the key.
func TestReconcilerGoesOnAfterAFailedRepair(t *testing.T) {
	t.Parallel()
	a, b := twoDBs(t, itemsDDL)
	exec(t, a.Pool, seedItems, 50)
	exec(t, b.Pool, seedItems, 50)
	exec(t, b.Pool, `UPDATE items SET name = 'x' WHERE id IN (7, 8, 9)`)
	c := newChecker(t, a.Pool, b.Pool, 0, items)
	r, err := c.CheckTable(t.Context(), items)
	require.NoError(t, err)
	n := 0
	rec, err := reconcile.NewReconciler(c, reconcile.ReconcilerConfig{
		Repair: func(_ context.Context, _ duplex.Table, key duplex.Key) (duplex.ActionResult, error) {
			n++
			if key.String() == "id=8" {
				return duplex.ActionResult{}, duplex.Transient(errors.New("boom"))
			}
			return duplex.ActionResult{Outcome: duplex.OutcomeApplied}, nil
		},
	})
	require.NoError(t, err)
	rr, err := rec.Reconcile(t.Context(), r)
	require.ErrorContains(t, err, "public.items: 1 of 3 repairs failed; first: reconcile: table public.items key id=8: boom")
	require.True(t, duplex.IsTransient(err))
	require.Equal(t, 3, n)
	require.Equal(t, map[duplex.Outcome]int{duplex.OutcomeApplied: 2, reconcile.OutcomeError: 1}, rr.Outcomes)
	require.Equal(t, reconcile.OutcomeError, rr.Keys[1].Outcome)
	require.Equal(t, reconcile.DiffValues, rr.Keys[1].Kind)

	// A report the Checker did not make is refused.
	_, err = rec.Reconcile(t.Context(), &reconcile.Report{Table: items, Mismatched: []reconcile.Range{{}}})
	require.ErrorContains(t, err, "does not come from a Checker")
}
