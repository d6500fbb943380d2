package resolve_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

func TestParseAuthority(t *testing.T) {
	t.Parallel()
	a, err := resolve.ParseAuthority(" customers.name=crm, customers.email=crm,payment_status=billing,last_activity=both,crm.accounts.name=billing,")
	require.NoError(t, err)
	customers := duplex.Table{Schema: "public", Name: "customers"}
	orders := duplex.Table{Schema: "public", Name: "orders"}
	accounts := duplex.Table{Schema: "crm", Name: "accounts"}
	for _, tc := range []struct {
		table duplex.Table
		field string
		owner string
	}{
		{customers, "name", "crm"},
		{customers, "email", "crm"},
		{customers, "payment_status", "billing"}, // bare field: every table
		{orders, "payment_status", "billing"},
		{orders, "last_activity", resolve.Both},
		{orders, "name", ""}, // customers.name is public.customers only
		{accounts, "name", "billing"},
		{duplex.Table{Schema: "other", Name: "customers"}, "name", ""},
	} {
		require.Equal(t, tc.owner, a.Owner(tc.table, tc.field), "%s.%s", tc.table, tc.field)
	}
	require.Equal(t, "customers.name=crm,customers.email=crm,payment_status=billing,last_activity=both,crm.accounts.name=billing", a.String())

	empty, err := resolve.ParseAuthority("")
	require.NoError(t, err)
	require.Empty(t, empty.Owner(customers, "name"))
}

func TestParseAuthorityNamesEveryBadRule(t *testing.T) {
	t.Parallel()
	_, err := resolve.ParseAuthority("name,customers.=crm,a.b.c.d=crm,email=,public.customers.name=crm,customers.name=billing,x y=crm")
	require.Error(t, err)
	for _, want := range []string{
		`resolve: authority rule "name": want target=owner`,
		`resolve: authority rule "customers.=crm": invalid target "customers."`,
		`resolve: authority rule "a.b.c.d=crm": invalid target "a.b.c.d"`,
		`resolve: authority rule "email=": no owner`,
		`resolve: authority rule "customers.name=billing": public.customers.name already has a rule ("public.customers.name=crm")`,
		`resolve: authority rule "x y=crm": invalid target "x y"`,
	} {
		require.ErrorContains(t, err, want)
	}
}

func TestNewAuthority(t *testing.T) {
	t.Parallel()
	a, err := resolve.NewAuthority(map[string]string{"customers.name": "crm", "payment_status": "billing"})
	require.NoError(t, err)
	require.Equal(t, "crm", a.Owner(duplex.Table{Schema: "public", Name: "customers"}, "name"))
	require.Equal(t, "billing", a.Owner(duplex.Table{Schema: "s", Name: "t"}, "payment_status"))

	_, err = resolve.NewAuthority(map[string]string{"customers.name": "crm", "public.customers.name": "billing", "x": ""})
	require.ErrorContains(t, err, `"public.customers.name=billing": public.customers.name already has a rule ("customers.name=crm")`)
	require.ErrorContains(t, err, `"x=": no owner`)
}

func TestAuthorityValidateNamesTheCulprit(t *testing.T) {
	t.Parallel()
	a, err := resolve.ParseAuthority("customers.emial=crm,custmers.name=crm,payment_status=bilin,last_seen=both,customers.name=crm")
	require.NoError(t, err)
	schema := map[duplex.Table][]string{
		{Schema: "public", Name: "customers"}: {"id", "name", "email", "payment_status"},
		{Schema: "public", Name: "orders"}:    {"id", "payment_status"},
	}
	err = a.Validate([]string{"crm", "billing"}, schema)
	require.Error(t, err)
	msgs := strings.Split(err.Error(), "\n")
	require.Equal(t, []string{
		`resolve: authority rule "customers.emial=crm": table public.customers has no column "emial"`,
		`resolve: authority rule "custmers.name=crm": no table public.custmers`,
		`resolve: authority rule "payment_status=bilin": unknown system "bilin" (want one of crm, billing or "both")`,
		`resolve: authority rule "last_seen=both": no table has a column "last_seen"`,
	}, msgs)

	good, err := resolve.ParseAuthority("customers.name=crm,payment_status=billing,email=both")
	require.NoError(t, err)
	require.NoError(t, good.Validate([]string{"crm", "billing"}, schema))
	require.NoError(t, a.Validate(nil, nil), "nil skips the checks")
}

// authority owns name on a and note on b; n is shared and tags unowned.
func authority(t *testing.T) *resolve.Authority {
	t.Helper()
	a, err := resolve.ParseAuthority("items.name=a,note=b,n=both")
	require.NoError(t, err)
	require.NoError(t, a.Validate([]string{"a", "b"}, map[duplex.Table][]string{items: itemColumns}))
	return a
}

func TestAuthorityUpdateUpdateOwnerWins(t *testing.T) {
	t.Parallel()
	auth := authority(t)
	out, _ := bothWays(t, func() duplex.Resolver { return auth }, func(p *pair) {
		p.Seed(row(1, "name", "x", "note", "x"))
		p.Update("a", 1, duplex.Values{"name": "name-a", "note": "note-a"})
		p.Update("b", 1, duplex.Values{"name": "name-b", "note": "note-b"})
	})
	require.Equal(t, row(1, "name", "name-a", "note", "note-b"), out.A["id=1"])
	require.Empty(t, out.Dead)
	require.Equal(t, []map[string]duplex.Pick{{"name": duplex.TakeSource, "note": duplex.KeepTarget}}, decisions(out.Calls, "a->b"))
	require.Equal(t, []map[string]duplex.Pick{{"name": duplex.KeepTarget, "note": duplex.TakeSource}}, decisions(out.Calls, "b->a"))
	require.Equal(t, duplex.UpdateUpdate, out.Calls[0].Kind)
}

func TestAuthorityInsertInsertOwnerWins(t *testing.T) {
	t.Parallel()
	auth := authority(t)
	out, _ := bothWays(t, func() duplex.Resolver { return auth }, func(p *pair) {
		p.Insert("a", row(2, "name", "name-a", "note", "note-a"))
		p.Insert("b", row(2, "name", "name-b", "note", "note-b"))
	})
	require.Equal(t, row(2, "name", "name-a", "note", "note-b"), out.A["id=2"])
	require.Empty(t, out.Dead)
	require.Equal(t, duplex.InsertInsert, out.Calls[0].Kind)
}

func TestAuthorityNonOwnerChangeIsNotPropagated(t *testing.T) {
	t.Parallel()
	p := newPair(t, authority(t))
	p.Seed(row(1, "name", "x", "note", "x"))
	p.Update("b", 1, duplex.Values{"name": "b's idea", "tags": []string{"t"}}) // b does not own name
	p.Quiesce("a")
	require.Equal(t, row(1, "name", "x", "note", "x", "tags", []string{"t"}), p.Get("a", 1), "the unowned tags field merges, name does not")
	require.Equal(t, row(1, "name", "x", "note", "x", "tags", []string{"t"}), p.Get("b", 1), "the owner's value is written back over the non-owner's")
	require.Equal(t, duplex.KeepTarget, p.Calls()[0].Picks["name"])

	// The owner's next write wins on both sides.
	p.Update("a", 1, duplex.Values{"name": "owner's"})
	p.Quiesce("b")
	require.Empty(t, p.Diff())
	require.Equal(t, "owner's", p.Get("b", 1)["name"])
	require.Empty(t, p.DeadLetters())
}

func TestAuthorityCreatesANewRowWhole(t *testing.T) {
	t.Parallel()
	out, _ := bothWays(t, func() duplex.Resolver { return authority(t) }, func(p *pair) {
		p.Insert("a", row(3, "name", "n", "note", "a set b's field at creation"))
	})
	require.Equal(t, row(3, "name", "n", "note", "a set b's field at creation"), out.B["id=3"])
}

func TestAuthorityDeleteUpdateOwnersEditKeepsTheRow(t *testing.T) {
	t.Parallel()
	// a deletes the row while b edits the field b owns: b's edit wins, the
	// row survives on b and comes back on a.
	out, _ := bothWays(t, func() duplex.Resolver { return authority(t) }, func(p *pair) {
		p.Seed(row(1, "name", "x", "note", "x"))
		p.Delete("a", 1)
		p.Update("b", 1, duplex.Values{"note": "b's"})
	})
	require.Equal(t, row(1, "name", "x", "note", "b's"), out.A["id=1"])
	require.Empty(t, out.Dead)
	kinds := map[string]duplex.ConflictKind{}
	for _, s := range out.Calls {
		kinds[s.Dir] = s.Kind
	}
	require.Equal(t, map[string]duplex.ConflictKind{"a->b": duplex.DeleteUpdate, "b->a": duplex.UpdateDelete}, kinds)
	require.Equal(t, []map[string]duplex.Pick{{"note": duplex.KeepTarget}}, decisions(out.Calls, "a->b"))
	require.Equal(t, []map[string]duplex.Pick{{"note": duplex.TakeSource}}, decisions(out.Calls, "b->a"))
}

func TestAuthorityDeleteByTheOwnerOfEveryContestedFieldWins(t *testing.T) {
	t.Parallel()
	// b edits name, which a owns, while a deletes the row: the delete wins.
	out, _ := bothWays(t, func() duplex.Resolver { return authority(t) }, func(p *pair) {
		p.Seed(row(1, "name", "x", "note", "x"), row(2, "name", "y"))
		p.Delete("a", 1)
		p.Update("b", 1, duplex.Values{"name": "b's"})
	})
	require.Nil(t, out.A["id=1"])
	require.Nil(t, out.B["id=1"])
	require.Empty(t, out.Dead)
	require.Equal(t, []map[string]duplex.Pick{{"name": duplex.TakeSource}}, decisions(out.Calls, "a->b"))
	require.Equal(t, []map[string]duplex.Pick{{"name": duplex.KeepTarget}}, decisions(out.Calls, "b->a"))
}

func TestAuthorityLeavesUnownedRowConflictsToTheNextResolver(t *testing.T) {
	t.Parallel()
	// b edits the unowned tags while a deletes: ownership cannot decide.
	out, _ := bothWays(t, func() duplex.Resolver { return duplex.Chain(authority(t), resolve.DeadLetterAll()) }, func(p *pair) {
		p.Seed(row(1, "name", "x"))
		p.Delete("a", 1)
		p.Update("b", 1, duplex.Values{"tags": []string{"t"}})
	})
	require.Len(t, out.Dead, 2, "both directions dead-letter")
	for _, d := range out.Dead {
		require.Equal(t, "dead_letter_all", d.Conflict.DecidedBy)
		require.Contains(t, d.Error, "manual review")
	}
	require.Nil(t, out.A["id=1"], "the target rows stay as they are")
	require.NotNil(t, out.B["id=1"])
}

func TestAuthoritySharedFieldGoesToTheNextResolver(t *testing.T) {
	t.Parallel()
	out, _ := bothWays(t, func() duplex.Resolver { return duplex.Chain(authority(t), resolve.SideWins("b")) }, func(p *pair) {
		p.Seed(row(1, "n", int64(1), "name", "x"))
		p.Update("a", 1, duplex.Values{"n": int64(2), "name": "a's"})
		p.Update("b", 1, duplex.Values{"n": int64(3), "name": "b's"})
	})
	require.Equal(t, row(1, "n", int64(3), "name", "a's"), out.A["id=1"], "n is shared: b wins it; a owns name")
	require.Empty(t, out.Dead)
}

func TestAuthorityWithoutFallbackDeadLettersUndecidedConflicts(t *testing.T) {
	t.Parallel()
	out, _ := bothWays(t, func() duplex.Resolver { return authority(t) }, func(p *pair) {
		p.Seed(row(1, "n", int64(1)))
		p.Update("a", 1, duplex.Values{"n": int64(2)})
		p.Update("b", 1, duplex.Values{"n": int64(3)})
	})
	require.Len(t, out.Dead, 2)
	require.Equal(t, "default", out.Dead[0].Conflict.DecidedBy)
	require.Equal(t, []string{"n"}, out.Dead[0].Conflict.Fields)
}

func TestAuthorityThirdSystemOwnerIsLeftUndecided(t *testing.T) {
	t.Parallel()
	auth, err := resolve.ParseAuthority("name=erp")
	require.NoError(t, err)
	require.ErrorContains(t, auth.Validate([]string{"a", "b"}, nil), `unknown system "erp"`)
	p := newPair(t, auth)
	p.Seed(row(1, "name", "x"))
	p.Update("a", 1, duplex.Values{"name": "a's"})
	p.Quiesce("a")
	require.Equal(t, duplex.Undecided, p.Calls()[0].Picks["name"])
	require.Equal(t, "a's", p.Get("b", 1)["name"], "a non-conflicting change takes the source's value by default")
}

func TestAuthorityResolveIsPureOnConflictFreeDeletes(t *testing.T) {
	t.Parallel()
	p := newPair(t, authority(t))
	p.Seed(row(1, "name", "x"))
	p.Delete("a", 1)
	p.Quiesce("a")
	require.Nil(t, p.Get("b", 1))
	require.Empty(t, p.DeadLetters())
	require.NoError(t, authority(t).Resolve(context.Background(), &duplex.Conflict{Change: &duplex.Change{Op: duplex.OpDelete}}))
}
