#!/usr/bin/env bash
# chaos-seeds.sh — run the kill test (internal/chaos TestChaosKillAndRestart)
# in its long form once per seed and print a Markdown table of its figures:
# rows compared (at the last check), then, worst over the checks (after each
# kill and at the end), rows diverged, single-sided keys in the DLQ, counter
# drift, rows deleted on one side still present on the other, rows unlike
# the oracle's (on either side), DLQ entries.
#
#   SEEDS=10 FIRST_SEED=1 OUT=/tmp/duplex-chaos-seeds scripts/chaos-seeds.sh
#
# Each seed's test output goes to $OUT/seed-<n>.log and pgbisync's output of
# every run (one file per start) to $OUT/seed-<n>/. Seeds run one after the
# other (one test process at a time). Exit status 1 when any seed failed.
set -uo pipefail

SEEDS=${SEEDS:-10}
FIRST_SEED=${FIRST_SEED:-1}
OUT=${OUT:-/tmp/duplex-chaos-seeds}
GO=${GO:-go}
mkdir -p "$OUT"

echo "# kill -9 under two-sided load: $SEEDS seeds from $FIRST_SEED"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (dirty)'), $(nproc) cores, $($GO version | cut -d' ' -f3), $(psql -X -At -d "${DUPLEX_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}" -c 'SHOW server_version' 2>/dev/null | sed 's/^/PostgreSQL /'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# command per seed: DUPLEX_CHAOS_LONG=1 DUPLEX_CHAOS_SEED=<n> $GO test -count=1 -v -run '^TestChaosKillAndRestart\$' ./internal/chaos/"
echo
echo "| seed | kills at (s) + down (ms) | merges left half-done per kill | writes committed a / b | checks | rows compared | rows diverged | single-sided keys in DLQ | counter drift | deleted, still present | rows unlike the oracle | DLQ entries | result |"
echo "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
failed=0
for seed in $(seq "$FIRST_SEED" $((FIRST_SEED + SEEDS - 1))); do
	log=$OUT/seed-$seed.log
	DUPLEX_CHAOS_LONG=1 DUPLEX_CHAOS_SEED=$seed DUPLEX_CHAOS_LOGDIR=$OUT/seed-$seed \
		$GO test -count=1 -v -run '^TestChaosKillAndRestart$' -timeout 20m ./internal/chaos/ >"$log" 2>&1
	status=$?
	result=pass
	if [[ $status -ne 0 ]]; then
		result="FAIL (see $log)"
		failed=1
	fi
	line=$(grep -o 'CHAOS-KILL .*' "$log" | tail -1)
	if [[ -z $line ]]; then
		echo "| $seed | | | | | | | | | | | | no figures: FAIL (see $log) |"
		failed=1
		continue
	fi
	get() { grep -o " $1=[^ ;]*" <<<"$line" | head -1 | cut -d= -f2; }
	writes=$(grep -o 'writes committed a: [0-9]*, b: [0-9]*' <<<"$line" | sed 's/writes committed a: \([0-9]*\), b: \([0-9]*\)/\1 \/ \2/')
	echo "| $seed | $(get at) | $(get half_done) | $writes | $(get checks) | $(get rows_compared) | $(get rows_diverged) | $(get single_sided_in_dlq) | $(get counter_drift) | $(get deleted_still_present) | $(get wrong) | $(get dlq_entries) | $result |"
done
exit $failed
