// Package testenv gives tests isolated access to the real services duplex
// talks to: PostgreSQL (with wal_level=logical) and Redis.
//
// Every call to [Postgres] creates a fresh, uniquely named database and
// registers a cleanup that drops it together with any replication slots that
// were created in it. Every call to [Redis] hands out a client and a unique
// key prefix; the cleanup deletes all keys under that prefix. Tests can
// therefore run in parallel (t.Parallel, go test ./... across packages)
// against one shared server without seeing each other's data.
//
// # Finding the servers
//
// The servers are discovered once per test process:
//
//   - PostgreSQL: the URL in DUPLEX_TEST_POSTGRES_URL (pointing at any
//     database of the server, with a superuser that may create databases and
//     replication slots); otherwise postgres://postgres@127.0.0.1:5432/postgres
//     when it answers within two seconds; otherwise a postgres:15 container
//     started with testcontainers-go.
//   - Redis: the URL in DUPLEX_TEST_REDIS_URL; otherwise redis://127.0.0.1:6379/0
//     when it answers PING within two seconds; otherwise a redis:7 container.
//
// When none of these work the test fails (it is never skipped) with a
// message explaining how to provide the server: run `make services`, which
// installs, configures and starts local PostgreSQL and Redis, or set the
// environment variables above.
//
// Containers started as a fallback live for the whole test process and are
// removed by the testcontainers reaper (Ryuk) when the process exits.
package testenv
