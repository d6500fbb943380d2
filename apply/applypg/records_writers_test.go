package applypg_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/internal/testenv"
)

// TestRecordsReadFromTheTable: the records of a sync and system are the
// table's, and an Applier reads what the table holds, also after it wrote
// a key itself: a second Applier of the same sync and system (another
// process of the sync: one that took the lock while the first one's lock
// session was lost, pgbisync -reconcile in that window, or a sync wired
// without duplexpg's lock) may have committed a newer record since.
func TestRecordsReadFromTheTable(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	exec(t, db, `CREATE TABLE rc (id bigint PRIMARY KEY, n bigint NOT NULL)`)
	tbl := duplex.Table{Schema: "public", Name: "rc"}
	k := duplex.Key{{Name: "id", Value: int64(1)}}
	rec := func(v uint64, n int64) []duplex.AgreementWrite {
		r := duplex.Values{"id": int64(1), "n": n}
		return []duplex.AgreementWrite{{Table: tbl, Key: k, Agreement: duplex.Agreement{Known: true, Version: v, Row: r, Peer: r}}}
	}
	first := newApplier(t, db, "rcsync")
	second := newApplier(t, db, "rcsync") // same sync, same system ("b")

	require.NoError(t, first.Apply(t.Context(), &duplex.Batch{Source: "a", Agreements: rec(1, 10)}))
	require.NoError(t, second.Apply(t.Context(), &duplex.Batch{Source: "a", Agreements: rec(2, 15)}))

	fromTable, err := second.Agreements(t.Context(), tbl, []duplex.Key{k})
	require.NoError(t, err)
	require.Equal(t, uint64(2), fromTable[0].Version, "the table holds version 2")

	got, err := first.Agreements(t.Context(), tbl, []duplex.Key{k})
	require.NoError(t, err)
	require.Equal(t, uint64(2), got[0].Version, "Agreements")
	_, gotL, err := first.LookupAgreements(t.Context(), tbl, []duplex.Key{k})
	require.NoError(t, err)
	require.Equal(t, uint64(2), gotL[0].Version, "LookupAgreements")
}
