package metrics_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/metrics"
	"github.com/duplexsync/duplex/reconcile"
)

// TestParityMetrics records checks and a reconciliation and reads them
// back from a registry: a failed check counts an error and leaves the
// figures of the last completed one.
func TestParityMetrics(t *testing.T) {
	t.Parallel()
	tbl := duplex.Table{Schema: "public", Name: "customers"}
	p := metrics.NewParity()
	reg := prometheus.NewRegistry()
	reg.MustRegister(p)

	p.RecordCheck(&reconcile.Report{
		Table: tbl, RowsA: 1000, RowsB: 998, Ranges: 10, FalseAlarms: 2,
		Mismatched: []reconcile.Range{{CountA: 100, CountB: 99}, {CountA: 100, CountB: 99}, {CountA: 100, CountB: 100}},
		Started:    time.Unix(1_800_000_000, 500_000_000), Duration: 1500 * time.Millisecond,
	})
	p.RecordCheck(&reconcile.Report{Table: tbl, Err: errors.New("side b: connection refused")})
	p.RecordRepair(&reconcile.RepairReport{Table: tbl, Outcomes: map[duplex.Outcome]int{"applied": 3, "dead_lettered": 1}})
	p.RecordRepair(&reconcile.RepairReport{Table: tbl, Outcomes: map[duplex.Outcome]int{"applied": 2}})
	p.RecordCheck(nil)
	p.RecordRepair(nil)

	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP duplex_parity_check_duration_seconds Duration of the last parity check that completed.
# TYPE duplex_parity_check_duration_seconds gauge
duplex_parity_check_duration_seconds{table="public.customers"} 1.5
# HELP duplex_parity_check_errors_total Parity checks that failed.
# TYPE duplex_parity_check_errors_total counter
duplex_parity_check_errors_total{table="public.customers"} 1
# HELP duplex_parity_false_alarms_total Key ranges that differed, then agreed when checked again (changes in flight).
# TYPE duplex_parity_false_alarms_total counter
duplex_parity_false_alarms_total{table="public.customers"} 2
# HELP duplex_parity_last_check_timestamp_seconds Start of the last parity check that completed, in Unix seconds.
# TYPE duplex_parity_last_check_timestamp_seconds gauge
duplex_parity_last_check_timestamp_seconds{table="public.customers"} 1.8000000005e+09
# HELP duplex_parity_mismatched_ranges Key ranges whose count or checksum differed at the last parity check.
# TYPE duplex_parity_mismatched_ranges gauge
duplex_parity_mismatched_ranges{table="public.customers"} 3
# HELP duplex_parity_ranges Key ranges compared at the last parity check.
# TYPE duplex_parity_ranges gauge
duplex_parity_ranges{table="public.customers"} 10
# HELP duplex_parity_rows Rows on each side at the last parity check.
# TYPE duplex_parity_rows gauge
duplex_parity_rows{side="a",table="public.customers"} 1000
duplex_parity_rows{side="b",table="public.customers"} 998
# HELP duplex_reconciled_total Keys the reconciler repaired, by outcome.
# TYPE duplex_reconciled_total counter
duplex_reconciled_total{outcome="applied",table="public.customers"} 5
duplex_reconciled_total{outcome="dead_lettered",table="public.customers"} 1
`)))

	// A later clean check resets the gauges.
	p.RecordCheck(&reconcile.Report{Table: tbl, RowsA: 1000, RowsB: 1000, Ranges: 10, Started: time.Unix(1_800_000_600, 0)})
	require.Equal(t, 0.0, testutil.ToFloat64(p.Collectors("mismatched", tbl.String())))
	require.Equal(t, 1000.0, testutil.ToFloat64(p.Collectors("rows", "b", tbl.String())))
	require.Equal(t, 1_800_000_600.0, testutil.ToFloat64(p.Collectors("last_check", tbl.String())))
}
