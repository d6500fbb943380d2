package applypg

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/internal/testenv"
)

// TestLedgerQueryProbesTheIndexPerID checks the plan of the ledger question
// on a large ledger that was never analyzed: it must look each ID up in the
// primary key, not scan the sync's rows and filter them.
func TestLedgerQueryProbesTheIndexPerID(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, err := db.Pool.Exec(t.Context(), `CREATE TABLE ledger (sync text NOT NULL, target text NOT NULL, change_id text NOT NULL,
		PRIMARY KEY (sync, target, change_id));
		INSERT INTO ledger SELECT 's', 'b', 'id' || i FROM generate_series(1, 50000) i`)
	require.NoError(t, err)
	rows, err := db.Pool.Query(t.Context(), "EXPLAIN "+ledgerSQL("ledger"), "s", "b", []string{"id1", "id2", "nope"})
	require.NoError(t, err)
	var plan []string
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan = append(plan, line)
	}
	require.NoError(t, rows.Err())
	text := strings.Join(plan, "\n")
	require.Contains(t, text, "change_id = i.id", "an index condition on the id:\n%s", text)
	require.NotContains(t, text, "ANY", text)

	got, err := db.Pool.Query(t.Context(), ledgerSQL("ledger"), "s", "b", []string{"id1", "nope", "id50000"})
	require.NoError(t, err)
	var found []string
	for got.Next() {
		var id string
		require.NoError(t, got.Scan(&id))
		found = append(found, id)
	}
	require.NoError(t, got.Err())
	require.ElementsMatch(t, []string{"id1", "id50000"}, found)
}
