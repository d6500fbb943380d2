package applypg_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
)

var people = duplex.Table{Schema: "public", Name: "people"}

func personKey(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }

// TestUniqueErrorNamesTheHoldingRow: writes colliding with another row on
// a unique constraint other than the primary key fail with a
// *duplex.UniqueError naming the constraint, the values and the row
// holding them: an insert, an update of one column of a composite
// constraint (the other column from the row), a partial index (the
// holding row within its predicate), an expression index (the
// database's detail only); the primary key is not a unique collision.
func TestUniqueErrorNamesTheHoldingRow(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	exec(t, db, `CREATE TABLE people (id bigint PRIMARY KEY, tenant int NOT NULL, email text NOT NULL, nick text, active bool NOT NULL DEFAULT true,
			CONSTRAINT people_tenant_email_key UNIQUE (tenant, email));
		CREATE UNIQUE INDEX people_nick_active ON people (nick) WHERE active;
		CREATE UNIQUE INDEX people_lower_email ON people (lower(email), tenant) WHERE tenant = 9;
		INSERT INTO people VALUES (1, 1, 'ann@x', 'ann', true), (2, 1, 'bob@x', 'bob', true), (3, 2, 'cy@x', 'cy', false), (4, 9, 'Dee@x', 'dee', true)`)
	a := newApplier(t, db, testenv.UniqueName(t, "uq"))
	apply := func(w duplex.Write) *duplex.UniqueError {
		t.Helper()
		w.Table = people
		w.Change = &duplex.Change{ID: "c-" + w.Key.String(), Source: "a", Table: people, Key: w.Key, Op: w.Op}
		err := a.Apply(t.Context(), &duplex.Batch{Source: "a", Writes: []duplex.Write{w}})
		require.Error(t, err)
		var be *duplex.BatchError
		require.True(t, errors.As(err, &be), "%v", err)
		require.Equal(t, 0, be.Index)
		ue, ok := errors.AsType[*duplex.UniqueError](err)
		require.True(t, ok, "%v", err)
		require.True(t, duplex.IsPermanent(err))
		return ue
	}

	ue := apply(duplex.Write{Op: duplex.OpInsert, Key: personKey(10), Set: duplex.Values{"id": int64(10), "tenant": int64(1), "email": "ann@x", "nick": "x"}})
	require.Equal(t, "people_tenant_email_key", ue.Unique.Constraint)
	require.Equal(t, []string{"tenant", "email"}, ue.Unique.Columns)
	require.Equal(t, personKey(1), ue.Unique.HolderKey)
	require.Equal(t, "ann", ue.Holder["nick"])
	require.Equal(t, `tenant=1,email="ann@x"`, ue.Unique.ValuesText())
	require.Contains(t, ue.Error(), "is held by the row id=1")

	// An update of email alone: tenant comes from the row itself.
	ue = apply(duplex.Write{Op: duplex.OpUpdate, Key: personKey(2), Set: duplex.Values{"email": "ann@x"}, Expect: duplex.Values{"email": "bob@x"}})
	require.Equal(t, "people_tenant_email_key", ue.Unique.Constraint)
	require.Equal(t, personKey(1), ue.Unique.HolderKey)

	// A partial index: cy is inactive, so a new active cy collides with
	// nobody; a new active ann collides with row 1.
	ue = apply(duplex.Write{Op: duplex.OpInsert, Key: personKey(11), Set: duplex.Values{"id": int64(11), "tenant": int64(3), "email": "z@x", "nick": "ann"}})
	require.Equal(t, "people_nick_active", ue.Unique.Constraint)
	require.Equal(t, personKey(1), ue.Unique.HolderKey)

	// An expression index: no columns, the database's detail.
	ue = apply(duplex.Write{Op: duplex.OpInsert, Key: personKey(12), Set: duplex.Values{"id": int64(12), "tenant": int64(9), "email": "dee@X", "nick": "d2"}})
	require.Equal(t, "people_lower_email", ue.Unique.Constraint)
	require.Nil(t, ue.Unique.Columns)
	require.Nil(t, ue.Unique.HolderKey)
	require.Contains(t, ue.Unique.Detail, "dee@x")
	require.Equal(t, ue.Unique.Detail, ue.Unique.ValuesText())

	// An existing key is stale, not a unique collision.
	err := a.Apply(t.Context(), &duplex.Batch{Source: "a", Writes: []duplex.Write{{Op: duplex.OpInsert, Table: people, Key: personKey(1),
		Set: duplex.Values{"id": int64(1), "tenant": int64(5), "email": "other@x", "nick": "o"}}}})
	require.ErrorIs(t, err, duplex.ErrStale)
	_, ok := errors.AsType[*duplex.UniqueError](err)
	require.False(t, ok)

	// The row is written once the value is free.
	require.NoError(t, a.Apply(t.Context(), &duplex.Batch{Source: "a", Writes: []duplex.Write{{Op: duplex.OpInsert, Table: people, Key: personKey(13),
		Set: duplex.Values{"id": int64(13), "tenant": int64(1), "email": "new@x", "nick": "n"}}}}))
}
