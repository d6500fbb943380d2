package duplexpg

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/resolve"
)

// TestLWWPolicyPerTable checks the per-table choice of -conflict lww made
// from both sides' catalogs: the column where both sides have it, commit
// timestamps elsewhere, an error for a column that is not a timestamp, and
// the DLQ fallback (with a warning) where a side does not record commit
// timestamps.
func TestLWWPolicyPerTable(t *testing.T) {
	t.Parallel()
	customers := duplex.Table{Schema: "public", Name: "customers"}
	notes := duplex.Table{Schema: "public", Name: "notes"}
	half := duplex.Table{Schema: "public", Name: "half"}
	tables := []duplex.Table{customers, notes, half}
	const skew = 500 * time.Millisecond
	const option = "-conflict lww -lww-column"
	end := func(system string) EndpointConfig { return EndpointConfig{System: system, Label: "-" + system} }
	sides := func(commitTimesA, commitTimesB bool) [2]*Endpoint {
		return [2]*Endpoint{
			{cfg: end("a"), commitTimes: commitTimesA, tables: map[duplex.Table]tableInfo{
				customers: {types: map[string]string{"id": "bigint", "updated_at": "timestamp with time zone"}},
				notes:     {types: map[string]string{"id": "bigint"}},
				half:      {types: map[string]string{"id": "bigint", "updated_at": "timestamp(3) without time zone"}},
			}},
			{cfg: end("b"), commitTimes: commitTimesB, tables: map[duplex.Table]tableInfo{
				customers: {types: map[string]string{"id": "bigint", "updated_at": "timestamp with time zone"}},
				notes:     {types: map[string]string{"id": "bigint"}},
				half:      {types: map[string]string{"id": "bigint"}},
			}},
		}
	}
	logged := func() (*slog.Logger, *bytes.Buffer) {
		var buf bytes.Buffer
		return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})), &buf
	}

	logger, buf := logged()
	r, desc, err := lwwPolicy("updated_at", option, skew, tables, sides(true, true), logger)
	require.NoError(t, err)
	require.Equal(t, "lww(updated_at, skew 500ms, commit timestamps on public.notes,public.half)", desc)
	byTable, ok := r.(resolve.ByTable)
	require.True(t, ok, "%T", r)
	require.Equal(t, &resolve.LWW{Column: "updated_at", Skew: skew}, byTable.Tables[customers])
	require.Equal(t, &resolve.LWW{Skew: skew}, byTable.Tables[notes], "commit timestamps")
	require.Equal(t, &resolve.LWW{Skew: skew}, byTable.Tables[half], "the column on one side only orders nothing")
	require.Equal(t, strings.Join([]string{
		`level=INFO msg="conflict policy" table=public.customers policy="lww on column updated_at"`,
		`level=INFO msg="conflict policy" table=public.notes policy="lww on commit timestamps (no updated_at column)"`,
		`level=INFO msg="conflict policy" table=public.half policy="lww on commit timestamps (no updated_at column on -b)"`,
	}, "\n")+"\n", buf.String())

	// A side without track_commit_timestamp: the commit-timestamp tables'
	// conflicts go to the DLQ, from both directions alike, and pgbisync
	// warns.
	logger, buf = logged()
	r, _, err = lwwPolicy("updated_at", option, skew, tables, sides(true, false), logger)
	require.NoError(t, err)
	byTable = r.(resolve.ByTable)
	require.Equal(t, unknownCommitTimes{column: "updated_at", off: "-b"}, byTable.Tables[notes])
	require.Equal(t, unknownCommitTimes{column: "updated_at", off: "-b"}, byTable.Tables[half])
	require.Equal(t, &resolve.LWW{Column: "updated_at", Skew: skew}, byTable.Tables[customers], "the column needs no commit timestamps")
	require.Contains(t, buf.String(), `level=WARN msg="track_commit_timestamp is off: conflicts on tables without the lww column cannot be ordered and go to the dead-letter queue" `+
		`side=b tables=public.notes,public.half lww_column=updated_at fix="ALTER SYSTEM SET track_commit_timestamp = on, then restart PostgreSQL"`)
	require.NotContains(t, buf.String(), "side=a")

	// Every table has the column: LWW on it, as before; no warning even
	// without commit timestamps, which it does not need.
	logger, buf = logged()
	r, desc, err = lwwPolicy("updated_at", option, skew, []duplex.Table{customers}, sides(false, false), logger)
	require.NoError(t, err)
	require.Equal(t, "lww(updated_at, skew 500ms)", desc)
	require.Equal(t, &resolve.LWW{Column: "updated_at", Skew: skew}, r)
	require.NotContains(t, buf.String(), "WARN")

	// A column that is there but not a timestamp is an error naming the
	// side, table and column.
	bad := sides(true, true)
	bad[1].tables[notes] = tableInfo{types: map[string]string{"id": "bigint", "updated_at": "text"}}
	_, _, err = lwwPolicy("updated_at", option, skew, tables, bad, slog.New(slog.DiscardHandler))
	require.EqualError(t, err, `-conflict lww -lww-column updated_at (on -b): resolve: LWW column "updated_at": public.notes.updated_at is text, not a timestamp`)
}
