package resolve_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

func TestSideWinsEveryKind(t *testing.T) {
	t.Parallel()
	type want struct{ a, b duplex.Values } // the final row for each winner
	for _, tc := range []struct {
		name string
		kind duplex.ConflictKind // the kind a->b sees
		sc   scenario
		want want
	}{
		{
			name: "update-update", kind: duplex.UpdateUpdate,
			sc: func(p *pair) {
				p.Seed(row(1, "name", "x", "note", "x"))
				p.Update("a", 1, duplex.Values{"name": "from-a", "note": "only a"})
				p.Update("b", 1, duplex.Values{"name": "from-b"})
			},
			want: want{a: row(1, "name", "from-a", "note", "only a"), b: row(1, "name", "from-b", "note", "only a")},
		},
		{
			name: "insert-insert", kind: duplex.InsertInsert,
			sc: func(p *pair) {
				p.Insert("a", row(1, "name", "from-a", "n", int64(1)))
				p.Insert("b", row(1, "name", "from-b", "note", "b's note"))
			},
			want: want{a: row(1, "name", "from-a", "n", int64(1)), b: row(1, "name", "from-b", "note", "b's note")},
		},
		{
			name: "a deletes, b updates", kind: duplex.DeleteUpdate,
			sc: func(p *pair) {
				p.Seed(row(1, "name", "x"))
				p.Delete("a", 1)
				p.Update("b", 1, duplex.Values{"name": "from-b"})
			},
			want: want{a: nil, b: row(1, "name", "from-b")},
		},
		{
			name: "a updates, b deletes", kind: duplex.UpdateDelete,
			sc: func(p *pair) {
				p.Seed(row(1, "name", "x"))
				p.Update("a", 1, duplex.Values{"name": "from-a"})
				p.Delete("b", 1)
			},
			want: want{a: row(1, "name", "from-a"), b: nil},
		},
	} {
		for _, winner := range []string{"a", "b"} {
			t.Run(tc.name+"/"+winner+" wins", func(t *testing.T) {
				t.Parallel()
				out, _ := bothWays(t, func() duplex.Resolver { return resolve.SideWins(winner) }, tc.sc)
				require.Empty(t, out.Dead)
				expect := map[string]duplex.Values{"a": tc.want.a, "b": tc.want.b}[winner]
				require.Equal(t, expect, out.A["id=1"])
				var kinds []duplex.ConflictKind
				for _, s := range out.Calls {
					if s.Dir == "a->b" {
						kinds = append(kinds, s.Kind)
					}
				}
				require.Equal(t, []duplex.ConflictKind{tc.kind}, kinds)
			})
		}
	}
}

func TestSideWinsUnknownSystemDeadLetters(t *testing.T) {
	t.Parallel()
	out, _ := bothWays(t, func() duplex.Resolver { return resolve.SideWins("erp") }, concurrentEdits(at(1), at(2)))
	require.Len(t, out.Dead, 2)
	require.Contains(t, out.Dead[0].Error, `side wins: "erp" is neither`)
	require.Equal(t, "side_wins", out.Dead[0].Conflict.DecidedBy)
}

func TestDeadLetterAll(t *testing.T) {
	t.Parallel()
	out, _ := bothWays(t, func() duplex.Resolver { return resolve.DeadLetterAll() }, func(p *pair) {
		p.Seed(row(1, "name", "x"), row(2, "name", "y"))
		p.Update("a", 1, duplex.Values{"name": "from-a", "note": "merges"})
		p.Update("b", 1, duplex.Values{"name": "from-b"})
		p.Update("b", 2, duplex.Values{"name": "no conflict"})
	})
	require.Len(t, out.Dead, 2)
	for _, d := range out.Dead {
		require.Contains(t, d.Error, "manual review: update_update conflict on public.items id=1, field(s) name")
		require.Equal(t, "dead_letter_all", d.Conflict.DecidedBy)
		require.Equal(t, []string{"name"}, d.Conflict.Fields)
	}
	require.Equal(t, row(1, "name", "from-a", "note", "merges"), out.A["id=1"], "the contested field is held on each side")
	require.Equal(t, row(1, "name", "from-b", "note", "merges"), out.B["id=1"], "the field only a changed flows")
	require.Equal(t, "no conflict", out.A["id=2"]["name"], "conflict-free changes flow")
}

func TestDeadLetterAllRowConflicts(t *testing.T) {
	t.Parallel()
	out, _ := bothWays(t, func() duplex.Resolver { return resolve.DeadLetterAll() }, func(p *pair) {
		p.Seed(row(1, "name", "x"))
		p.Delete("a", 1)
		p.Update("b", 1, duplex.Values{"name": "from-b"})
		p.Insert("a", row(2, "name", "a's"))
		p.Insert("b", row(2, "name", "b's"))
	})
	kinds := map[duplex.ConflictKind]int{}
	for _, d := range out.Dead {
		kinds[d.Conflict.Kind]++
		require.Contains(t, d.Error, "manual review")
	}
	require.Equal(t, map[duplex.ConflictKind]int{duplex.DeleteUpdate: 1, duplex.UpdateDelete: 1, duplex.InsertInsert: 2}, kinds)
	require.Nil(t, out.A["id=1"])
	require.Equal(t, "from-b", out.B["id=1"]["name"])
}
