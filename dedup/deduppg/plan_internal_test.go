package deduppg

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/internal/testenv"
)

// TestSeenPlanProbesTheKey checks that Seen's generic plan (the one a
// prepared statement ends up with) looks every id up in the primary key
// even on a large ledger that was never analyzed, rather than reading all
// the rows of the sync and target and filtering them.
func TestSeenPlanProbesTheKey(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	d, err := New(ctx, db.Pool, Config{Sync: "s", Target: "b"})
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO duplex.applied (sync, target, change_id)
		SELECT 's', 'b', 'slot/0/16B3748#' || g FROM generate_series(1, 50000) g`)
	require.NoError(t, err)

	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "PREPARE seen(text, text, text[]) AS "+d.seenSQL)
	require.NoError(t, err)
	rows, err := conn.Query(ctx, "EXPLAIN EXECUTE seen('s', 'b', '{a,b,c}')", pgx.QueryExecModeSimpleProtocol)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	plan := strings.Join(lines, "\n")
	require.Contains(t, plan, "Index Cond: ((sync = $1) AND (target = $2) AND (change_id = i.id))", plan)
	require.NotContains(t, plan, "Hash", plan)
}
