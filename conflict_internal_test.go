package duplex

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDetect(t *testing.T) {
	t.Parallel()
	k := Key{{Name: "id", Value: int64(1)}}
	tbl := Table{Schema: "public", Name: "t"}
	type field struct {
		name        string
		conflicting bool
	}
	cases := []struct {
		name    string
		change  Change
		current Values
		need    bool
		kind    ConflictKind
		fields  []field
	}{
		{
			name:   "insert into empty target",
			change: Change{Op: OpInsert, After: Values{"id": int64(1), "a": "x"}},
			need:   true, kind: NoConflict, fields: []field{{"a", false}, {"id", false}},
		},
		{
			name:    "insert of a row the target already holds identically",
			change:  Change{Op: OpInsert, After: Values{"id": int64(1), "a": "x"}},
			current: Values{"id": int64(1), "a": "x"},
		},
		{
			name:    "insert-insert with a differing field",
			change:  Change{Op: OpInsert, After: Values{"id": int64(1), "a": "x", "b": int64(2)}},
			current: Values{"id": int64(1), "a": "y", "b": int64(2)},
			need:    true, kind: InsertInsert, fields: []field{{"a", true}},
		},
		{
			name:    "update merging fields only one side changed",
			change:  Change{Op: OpUpdate, Before: Values{"id": int64(1), "a": "x", "b": "p"}, After: Values{"id": int64(1), "a": "x2", "b": "p"}},
			current: Values{"id": int64(1), "a": "x", "b": "p-changed-on-target"},
			need:    true, kind: NoConflict, fields: []field{{"a", false}},
		},
		{
			name:    "update-update on the same field",
			change:  Change{Op: OpUpdate, Before: Values{"id": int64(1), "a": "x"}, After: Values{"id": int64(1), "a": "src"}},
			current: Values{"id": int64(1), "a": "tgt"},
			need:    true, kind: UpdateUpdate, fields: []field{{"a", true}},
		},
		{
			name:    "both sides made the same change: offered as converged, kept by default",
			change:  Change{Op: OpUpdate, Before: Values{"id": int64(1), "a": "x"}, After: Values{"id": int64(1), "a": "same"}},
			current: Values{"id": int64(1), "a": "same"},
			need:    true, kind: NoConflict, fields: []field{{"a", false}},
		},
		{
			name:    "NULL is a value: x -> NULL against x",
			change:  Change{Op: OpUpdate, Before: Values{"id": int64(1), "a": "x"}, After: Values{"id": int64(1), "a": nil}},
			current: Values{"id": int64(1), "a": "x"},
			need:    true, kind: NoConflict, fields: []field{{"a", false}},
		},
		{
			name:    "NULL on the target against a source change is a conflict",
			change:  Change{Op: OpUpdate, Before: Values{"id": int64(1), "a": "x"}, After: Values{"id": int64(1), "a": "y"}},
			current: Values{"id": int64(1), "a": nil},
			need:    true, kind: UpdateUpdate, fields: []field{{"a", true}},
		},
		{
			name: "unchanged TOAST column is never written",
			change: Change{Op: OpUpdate, Before: Values{"id": int64(1), "a": "x"}, After: Values{"id": int64(1), "a": "y", "big": nil},
				Unchanged: []string{"big"}},
			current: Values{"id": int64(1), "a": "x", "big": "huge"},
			need:    true, kind: NoConflict, fields: []field{{"a", false}},
		},
		{
			name:   "update of a row the target does not have",
			change: Change{Op: OpUpdate, Before: Values{"id": int64(1), "a": "x", "b": "same"}, After: Values{"id": int64(1), "a": "y", "b": "same"}},
			need:   true, kind: UpdateDelete, fields: []field{{"a", true}},
		},
		{
			name:    "update without before image: differing fields are the source's",
			change:  Change{Op: OpUpdate, After: Values{"id": int64(1), "a": "y", "b": "same"}},
			current: Values{"id": int64(1), "a": "x", "b": "same"},
			need:    true, kind: NoConflict, fields: []field{{"a", false}},
		},
		{
			name:   "delete of a row already gone",
			change: Change{Op: OpDelete, Before: Values{"id": int64(1), "a": "x"}},
		},
		{
			name:    "delete of an unchanged row",
			change:  Change{Op: OpDelete, Before: Values{"id": int64(1), "a": "x"}},
			current: Values{"id": int64(1), "a": "x"},
			need:    true, kind: NoConflict,
		},
		{
			name:    "delete of a row the target changed",
			change:  Change{Op: OpDelete, Before: Values{"id": int64(1), "a": "x"}},
			current: Values{"id": int64(1), "a": "changed"},
			need:    true, kind: DeleteUpdate, fields: []field{{"a", true}},
		},
		{
			name:    "values compare by meaning: int widths, bytes, times, jsonb (json by text)",
			change:  Change{Op: OpInsert, After: Values{"id": int64(1), "i": int32(5), "b": []byte("ab"), "t": time.Unix(5, 0).UTC(), "j": JSONB(`{"a": 1, "b": 2}`), "jt": json.RawMessage(`{"a": 1}`)}},
			current: Values{"id": int64(1), "i": int64(5), "b": []byte("ab"), "t": time.Unix(5, 0).In(time.FixedZone("x", 3600)), "j": JSONB(`{"b":2,"a":1.0}`), "jt": json.RawMessage(`{"a": 1}`)},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.change.Table, tc.change.Key = tbl, k
			var c Conflict
			need := c.detect(Direction{From: "a", To: "b"}, &tc.change, tc.current)
			require.Equal(t, tc.need, need)
			if !need {
				return
			}
			require.Equal(t, tc.kind, c.Kind)
			var got []field
			for _, f := range c.fields {
				got = append(got, field{f.name, f.conflicting})
			}
			require.Equal(t, tc.fields, got)
		})
	}
}

func TestConvergedFieldsAreKeptUnlessAResolverMerges(t *testing.T) {
	t.Parallel()
	ch := &Change{Op: OpUpdate, Table: Table{Name: "t"}, Key: Key{{Name: "id", Value: 1}},
		Before: Values{"visits": int64(0)}, After: Values{"visits": int64(1)}}
	var c Conflict
	require.True(t, c.detect(Direction{From: "a", To: "b"}, ch, Values{"visits": int64(1)}))
	require.Equal(t, []string{"visits"}, c.Converged())
	require.Empty(t, c.Undecided(), "nothing for ordinary resolvers to decide")
	require.True(t, c.Done())
	pick, _ := c.Decision("visits")
	require.Equal(t, KeepTarget, pick)
	require.True(t, c.Set("visits", int64(2), "counter"), "a merge may revisit a converged field")
	require.False(t, c.Keep("visits", "other"), "once a resolver decided, it stays decided")
}

func TestConflictDecisions(t *testing.T) {
	t.Parallel()
	ch := &Change{Op: OpUpdate, Table: Table{Name: "t"}, Key: Key{{Name: "id", Value: 1}},
		Before: Values{"a": 1, "b": 1, "c": 1}, After: Values{"a": 2, "b": 2, "c": 2}}
	var c Conflict
	require.True(t, c.detect(Direction{From: "a", To: "b"}, ch, Values{"a": 1, "b": 9, "c": 9}))
	require.Equal(t, UpdateUpdate, c.Kind)
	require.Equal(t, []string{"b", "c"}, c.Conflicting())
	require.Equal(t, []string{"a", "b", "c"}, c.Undecided())
	require.True(t, c.Keep("b", "x"))
	require.False(t, c.Take("b", "y"), "a decided field is not decided again")
	require.True(t, c.Set("c", 42, "sum"))
	pick, v := c.Decision("c")
	require.Equal(t, UseValue, pick)
	require.Equal(t, 42, v)
	require.False(t, c.Done())
	c.Take("a", "x")
	require.True(t, c.Done())
	require.Contains(t, c.String(), "update_update t id=1 [b,c]")
}

func TestKeyStringIsCanonical(t *testing.T) {
	t.Parallel()
	require.Equal(t, `id=42`, Key{{Name: "id", Value: int64(42)}}.String())
	require.Equal(t, `id=42`, Key{{Name: "id", Value: int32(42)}}.String())
	require.Equal(t, `t="a,b",id=7`, Key{{Name: "t", Value: "a,b"}, {Name: "id", Value: 7}}.String())
	require.NotEqual(t, Key{{Name: "t", Value: "1"}}.String(), Key{{Name: "t", Value: 1}}.String())
	tbl, err := ParseTable("customers")
	require.NoError(t, err)
	require.Equal(t, "public.customers", tbl.String())
	_, err = ParseTable("a.b.c")
	require.ErrorContains(t, err, `"a.b.c"`)
}

func TestEqualAndKeyEdgeCases(t *testing.T) {
	t.Parallel()
	require.True(t, Equal(uint64(7), int64(7)))
	require.False(t, Equal(uint64(7), int64(-1)))
	require.True(t, Equal(map[string]any{"a": int32(1), "b": []any{int64(2)}}, Values{"a": int64(1), "b": []any{int16(2)}}))
	require.False(t, Equal([]any{1}, []any{1, 2}))
	require.Equal(t, Key{{Name: "id", Value: int64(7)}}.String(), Key{{Name: "id", Value: uint32(7)}}.String())
	require.NotEqual(t, Key{{Name: "id", Value: "7"}}.String(), Key{{Name: "id", Value: float64(7)}}.String())
	var k ConflictKind
	require.NoError(t, k.UnmarshalText([]byte("delete_update")))
	require.Equal(t, DeleteUpdate, k)
	require.Error(t, k.UnmarshalText([]byte("nope")))
}
