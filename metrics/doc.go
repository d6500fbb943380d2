// Package metrics exports a sync's health to Prometheus: per direction, the
// changes applied, the lag from source commit to target commit, retries,
// conflicts by kind and resolution, dead letters, schema drift and the
// acknowledged source position; and, read when Prometheus scrapes, the DLQ
// depth and the WAL a replication slot retains.
//
// It is the only package of duplex that imports prometheus/client_golang:
// the root package defines the duplex.Observer interface it implements.
//
//	m := metrics.New(metrics.Config{})
//	reg.MustRegister(m)          // or m.Register(prometheus.DefaultRegisterer)
//	sync, _ := duplex.NewSync(&duplex.SyncConfig{Observer: m, ...})
//
// # Metrics
//
//   - duplex_changes_applied_total{direction,table}
//   - duplex_changes_skipped_total{direction,table,reason} (echo, duplicate, noop)
//   - duplex_sync_lag_seconds{direction}: lag of the last applied change, or,
//     while the direction waits out an outage (retries failing with
//     unavailable or transient errors), the time it has waited if longer
//   - duplex_apply_lag_seconds{direction}: histogram of lags
//   - duplex_retries_total{direction,class}
//   - duplex_conflicts_total{direction,table,kind,resolution}
//   - duplex_conflict_rate_per_1000_changes{direction}: conflicts per 1,000
//     changes decided since the process started
//   - duplex_dead_letters_total{direction,table,reason}
//   - duplex_schema_drift_total{direction,table,field,missing_on}
//   - duplex_dedup_errors_total{direction,op}
//   - duplex_acked_total{direction}: acknowledgements sent to the source
//   - duplex_dlq_depth{direction,table,reason}: pending DLQ entries (scrape time)
//   - duplex_dlq_oldest_pending_age_seconds{direction,table,reason}: age of
//     the oldest pending entry of the group (scrape time; DepthRow.Oldest)
//   - duplex_slot_retained_wal_bytes{slot}: WAL held by a slot (scrape time)
//
// Onboarding (NewOnboarding, fed by duplex.OnboardingConfig.Progress):
// duplex_onboarding_rows_total{table,outcome},
// duplex_onboarding_running{table}, duplex_onboarding_rows_estimated{table},
// duplex_onboarding_rows_per_second{table} and
// duplex_onboarding_eta_seconds{table}; HealthConfig.Onboarding adds a line
// per table to /healthz while it runs.
//
// Parity (NewParity, fed by the reconcile package's reports):
// duplex_parity_rows{side,table}, duplex_parity_ranges{table},
// duplex_parity_mismatched_ranges{table},
// duplex_parity_last_check_timestamp_seconds{table},
// duplex_parity_check_duration_seconds{table},
// duplex_parity_false_alarms_total{table},
// duplex_parity_check_errors_total{table} and
// duplex_reconciled_total{table,outcome}.
//
// Health returns the /healthz handler: unhealthy past a lag, DLQ depth or
// retained-WAL threshold, with the reasons in the body.
package metrics
