# duplex — developer and CI entry points.
#
#   make services   install/configure/start local PostgreSQL (wal_level=logical) and Redis
#   make test       services + vet + gofmt check + race tests
#   make clean-db   drop leftover test databases (duplex_t_*) and their replication slots

GO ?= go
GOFMT ?= gofmt
PSQL ?= psql
# Admin connection used by clean-db (same discovery as internal/testenv).
PG_ADMIN_URL ?= $(or $(DUPLEX_TEST_POSTGRES_URL),postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)
TEST_TIMEOUT ?= 20m

.PHONY: all services test vet fmt fmt-check bench bench-quick bench-twoway bench-twoway-quick bench-go bench-long fuzz demo chaos chaos-seeds soak traps-long clean-db

all: test

services:
	bash scripts/services.sh

test: services vet fmt-check
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

vet:
	$(GO) vet ./...

# Rewrite all Go files with gofmt.
fmt:
	$(GOFMT) -w $$(find . -name '*.go' -not -path './.git/*')

# Fail, listing the files, when some Go file is not gofmt-formatted.
fmt-check:
	@files=$$($(GOFMT) -l $$(find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$files" ]; then \
		echo "gofmt: these files are not formatted (run 'make fmt'):"; \
		echo "$$files" | sed 's/^/  /'; \
		exit 1; \
	fi

# duplex against PostgreSQL's native logical replication, workload by
# workload, alternating runs (cmd/duplexbench; results in BENCHMARKS.md).
# Takes a while; BENCH_FLAGS=-quick for a smoke run.
BENCH_FLAGS ?=
bench: services
	$(GO) run ./cmd/duplexbench $(BENCH_FLAGS)

bench-quick: services
	$(GO) run ./cmd/duplexbench -quick

# Two-way mode (issue 18): the examples/pgbisync binary at its default
# flags against native logical replication on a customers table, alternating
# (bi-catchup, bi-pgbench, bi-steady, bi-twoway, bi-contention, bi-bigtx).
# Takes ~10 min at 3 runs; BENCH_FLAGS=-quick (or make bench-twoway-quick)
# for a smoke run.
bench-twoway: services
	$(GO) run ./cmd/duplexbench -mode twoway $(BENCH_FLAGS)

bench-twoway-quick: services
	$(GO) run ./cmd/duplexbench -mode twoway -quick

# Go benchmarks of every package (Pipeline overhead, decoder, dedup, apply methods).
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

bench-long: services
	DUPLEX_BENCH=1 $(GO) test -run '^TestBenchThroughput$$|^TestBenchRSS$$' -v -timeout 60m ./cdc/pglogical/
	DUPLEX_BENCH=1 $(GO) test -run '^TestMethodThroughput$$' -v -timeout 60m ./apply/applypg/
	DUPLEX_BENCH=1 $(GO) test -count=1 -run '^(TestParityBenchmark|TestReconcileThroughput)$$' -v -timeout 30m ./reconcile/

# Fuzz the pgoutput decoder (FUZZTIME=60s by default).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./cdc/pglogical/

# The fault-injection suite in its long form (30 s outages, more kills).
chaos: services
	DUPLEX_CHAOS_LONG=1 $(GO) test -count=1 -v -timeout 60m ./internal/chaos/

# The kill test (3 SIGKILLs over a minute under two-sided load) in its long
# form once per seed, SEEDS seeds from FIRST_SEED, one after the other; prints
# a Markdown table of the oracle's figures per seed (logs in CHAOS_OUT).
SEEDS ?= 10
FIRST_SEED ?= 1
CHAOS_OUT ?= /tmp/duplex-chaos-seeds
chaos-seeds: services
	SEEDS=$(SEEDS) FIRST_SEED=$(FIRST_SEED) OUT=$(CHAOS_OUT) GO=$(GO) bash scripts/chaos-seeds.sh

# 10 minutes at 1,000 writes/s per side with a SIGKILL every 2 minutes.
soak: services
	DUPLEX_SOAK=1 $(GO) test -count=1 -v -run '^TestSoak$$' -timeout 30m ./internal/chaos/

# Both applications insert for a minute into bigserial tables whose
# sequences the preflight interleaved (a few seconds in make test).
traps-long: services
	DUPLEX_TRAPS_LONG=1 $(GO) test -count=1 -v -run '^TestInterleavedSequencesUnderConcurrentInserts$$' -timeout 10m ./internal/e2e/

demo: services
	$(GO) run ./examples/crmbilling -duration 30s

# Drop leftovers of crashed test runs: replication slots in duplex_t_*
# databases (terminating their walsenders first), then the databases, then
# the replication origins of test syncs (duplex:*test*).
# Do not run while tests are running.
clean-db:
	@printf '%s\n' \
		"SELECT count(pg_terminate_backend(active_pid)) AS terminated_walsenders FROM pg_replication_slots WHERE database LIKE 'duplex\_t\_%' AND active_pid IS NOT NULL;" \
		"SELECT pg_sleep(0.5) WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE database LIKE 'duplex\_t\_%' AND active);" \
		"SELECT slot_name AS dropped_slot, pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database LIKE 'duplex\_t\_%' AND NOT active;" \
		"SELECT format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_database WHERE datname LIKE 'duplex\_t\_%' ORDER BY 1" \
		'\gexec' \
		"SELECT count(*) AS remaining_test_databases FROM pg_database WHERE datname LIKE 'duplex\_t\_%';" \
		"SELECT count(pg_replication_origin_drop(roname)) AS dropped_test_origins FROM pg_replication_origin WHERE roname LIKE 'duplex:%test%';" \
	| $(PSQL) -X -v ON_ERROR_STOP=1 -d '$(PG_ADMIN_URL)' -f -
	$(GO) run ./cmd/duplexbench -cleanup
