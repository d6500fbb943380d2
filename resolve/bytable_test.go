package resolve_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

// counted counts the conflicts it is shown before passing them to next.
type counted struct {
	next  duplex.Resolver
	calls atomic.Int64
}

func (c *counted) Resolve(ctx context.Context, cf *duplex.Conflict) error {
	c.calls.Add(1)
	return c.next.Resolve(ctx, cf)
}

// unstamped: both sides change name without touching ts (NULL), b a second
// after a: only commit times can order them.
func unstamped(p *pair) {
	p.Seed(row(1, "name", "x"))
	p.Update("a", 1, duplex.Values{"name": "from-a"})
	p.Update("b", 1, duplex.Values{"name": "from-b"})
}

func TestByTableDispatchesByTable(t *testing.T) {
	t.Parallel()
	other := duplex.Table{Schema: "public", Name: "other"}
	lwwCommit := func() duplex.Resolver {
		return &resolve.LWW{Skew: 500 * time.Millisecond, Now: func() time.Time { return epoch.Add(time.Hour) }}
	}

	t.Run("the table's own resolver", func(t *testing.T) {
		t.Parallel()
		// items lacks a usable ts: it is mapped to commit-time LWW, the
		// other tables to LWW on ts.
		var commit, column *counted
		out, p := bothWays(t, func() duplex.Resolver {
			commit, column = &counted{next: lwwCommit()}, &counted{next: lwwColumn()}
			return resolve.ByTable{Tables: map[duplex.Table]duplex.Resolver{items: commit}, Default: column}
		}, unstamped, withCommitTimes())
		require.Empty(t, out.Dead, "decided by commit time from both directions")
		require.Empty(t, out.DeadBA)
		require.Empty(t, p.Diff())
		require.Equal(t, "from-b", out.A["id=1"]["name"], "b's later commit wins")
		require.Equal(t, "from-b", out.B["id=1"]["name"])
		require.Len(t, out.Calls, 2, "one conflict, met once from each direction (one per run)")
		require.Equal(t, map[string]duplex.Pick{"name": duplex.KeepTarget}, decisions(out.Calls, "a->b")[0])
		require.Equal(t, map[string]duplex.Pick{"name": duplex.TakeSource}, decisions(out.Calls, "b->a")[0])
		require.Positive(t, commit.calls.Load())
		require.Zero(t, column.calls.Load(), "the default is not asked about a mapped table")
	})

	t.Run("the default for unmapped tables", func(t *testing.T) {
		t.Parallel()
		var commit *counted
		out, _ := bothWays(t, func() duplex.Resolver {
			commit = &counted{next: lwwCommit()}
			return resolve.ByTable{Tables: map[duplex.Table]duplex.Resolver{other: commit}, Default: lwwColumn()}
		}, unstamped, withCommitTimes())
		require.Len(t, out.Dead, 2, "LWW on ts cannot order NULL stamps: both directions dead-letter")
		for _, d := range out.Dead {
			require.Equal(t, "lww", d.Conflict.DecidedBy)
			require.Contains(t, d.Error, "ts is NULL")
		}
		require.Zero(t, commit.calls.Load())
	})

	t.Run("undecided without a resolver", func(t *testing.T) {
		t.Parallel()
		for name, r := range map[string]func() duplex.Resolver{
			"no default": func() duplex.Resolver {
				return resolve.ByTable{Tables: map[duplex.Table]duplex.Resolver{other: lwwCommit()}}
			},
			"mapped to nil": func() duplex.Resolver {
				return resolve.ByTable{Tables: map[duplex.Table]duplex.Resolver{items: nil}, Default: lwwCommit()}
			},
			"zero ByTable":    func() duplex.Resolver { return resolve.ByTable{} },
			"chained, no map": func() duplex.Resolver { return duplex.Chain(resolve.ByTable{}, resolve.DeadLetterAll()) },
		} {
			out, p := bothWays(t, r, unstamped, withCommitTimes())
			require.Len(t, out.Dead, 2, "%s: nobody decides, the conflict goes to the DLQ both ways", name)
			require.Equal(t, "from-a", p.Get("a", 1)["name"], "%s: the rows stay as they are", name)
			require.Equal(t, "from-b", p.Get("b", 1)["name"], name)
		}
	})
}

func TestLWWTablesWithoutColumn(t *testing.T) {
	t.Parallel()
	l, err := resolve.NewLWW("updated_at", time.Second)
	require.NoError(t, err)
	schema := map[duplex.Table]map[string]string{
		{Schema: "public", Name: "customers"}: {"id": "bigint", "updated_at": "timestamp(3) with time zone"},
		{Schema: "public", Name: "orders"}:    {"id": "bigint", "updated_at": "text"},
		{Schema: "public", Name: "notes"}:     {"id": "bigint"},
		{Schema: "crm", Name: "accounts"}:     {"id": "bigint"},
		{Schema: "crm", Name: "leads"}:        {"updated_at": "TIMESTAMPTZ"},
		{Schema: "crm", Name: "tags"}:         {"id": "bigint", "updated_at": "date"},
	}
	without, err := l.TablesWithoutColumn(schema)
	require.Equal(t, []duplex.Table{{Schema: "crm", Name: "accounts"}, {Schema: "public", Name: "notes"}}, without)
	require.Equal(t, []string{
		`resolve: LWW column "updated_at": crm.tags.updated_at is date, not a timestamp`,
		`resolve: LWW column "updated_at": public.orders.updated_at is text, not a timestamp`,
	}, strings.Split(err.Error(), "\n"), "a column of the wrong type is an error, not a table without it")

	ok := map[duplex.Table]map[string]string{{Schema: "public", Name: "customers"}: {"updated_at": "timestamptz"}}
	without, err = l.TablesWithoutColumn(ok)
	require.NoError(t, err)
	require.Empty(t, without)

	commit, err := resolve.NewLWW("", 0)
	require.NoError(t, err)
	without, err = commit.TablesWithoutColumn(schema)
	require.NoError(t, err)
	require.Len(t, without, len(schema), "without Column every table compares commit times")
}
