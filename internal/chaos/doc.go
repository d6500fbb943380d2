// Package chaos is duplex's fault-injection suite: it drives the pgbisync
// example as a separate process on two real PostgreSQL databases while
// writers edit both sides, injects one fault per test (SIGKILL, an
// unavailable database, killed replication connections, a Redis restart,
// clock skew, a second instance, schema drift, rejected values, a huge row,
// a dropped table or slot, hostile identifiers), and checks a convergence
// oracle at the end: every key equal on both sides or held in the
// dead-letter queue, every single-sided write present exactly once, and
// nothing applied after quiescence.
//
// TestChaosKillAndRestart runs a two-sided workload (several writers per
// side; keys only one side writes, keys both sides write) with an oracle of
// every committed write, and reports rows compared, rows diverged,
// single-sided keys in the DLQ, counter drift and deleted rows still
// present (twosided_test.go). DUPLEX_CHAOS_SEED fixes its schedule (logged
// when drawn); `make chaos-seeds SEEDS=10` runs it per seed in the long form
// and prints a table. DUPLEX_CHAOS_LOGDIR keeps every pgbisync run's output,
// DUPLEX_CHAOS_LOG_LEVEL sets pgbisync's -log-level.
//
// It has tests only. `go test ./internal/chaos/` runs the bounded form (part
// of `make test`); `make chaos` runs it with DUPLEX_CHAOS_LONG=1 (30 s
// outages, more kills); `make soak` runs the 10-minute soak.
package chaos
