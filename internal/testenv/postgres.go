package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// EnvPostgresURL names the environment variable that points the tests at an
// existing PostgreSQL server. Its value is a URL to any database on that
// server, for a superuser (or a role with CREATEDB and REPLICATION); it is
// used for administrative statements and as the template for the per-test
// database URLs.
const EnvPostgresURL = "DUPLEX_TEST_POSTGRES_URL"

// defaultPostgresURL is the local server configured by `make services`.
const defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// probeTimeout bounds how long discovery waits for a local server to answer.
const probeTimeout = 2 * time.Second

// cleanupTimeout bounds the whole cleanup of one test database.
const cleanupTimeout = time.Minute

// dbPrefix starts the name of every database created by Postgres; make
// clean-db drops leftovers by this prefix.
const dbPrefix = "duplex_t_"

// DB is an isolated PostgreSQL database created for one test by [Postgres].
// It is dropped, together with its replication slots, when the test ends.
type DB struct {
	// URL connects to the database (postgres://...), for the same role as
	// the administrative connection.
	URL string
	// Name is the database name: duplex_t_<test name>_<8 hex digits>.
	Name string
	// Pool is a connection pool to the database, closed by the cleanup.
	Pool *pgxpool.Pool
}

// ReplicationURL returns URL with replication=database added, suitable for
// a logical replication connection (pgconn / pglogrepl) to the database.
func (db *DB) ReplicationURL() string {
	u, err := url.Parse(db.URL)
	if err != nil {
		// db.URL was produced by url.URL.String, so this cannot happen.
		panic(fmt.Sprintf("testenv: parsing %q: %v", db.URL, err))
	}
	q := u.Query()
	q.Set("replication", "database")
	u.RawQuery = q.Encode()
	return u.String()
}

// pgServer is the administrative PostgreSQL server shared by the process.
type pgServer struct {
	adminURL *url.URL // URL of the admin database; copied for per-test URLs
	source   string   // where the server came from, for messages
}

var (
	pgOnce sync.Once
	pg     *pgServer
	pgErr  error
)

// postgresServer discovers the server once per process.
func postgresServer() (*pgServer, error) {
	pgOnce.Do(func() { pg, pgErr = discoverPostgres() })
	return pg, pgErr
}

func discoverPostgres() (*pgServer, error) {
	ctx := context.Background()
	if raw := os.Getenv(EnvPostgresURL); raw != "" {
		u, err := parsePostgresURL(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvPostgresURL, err)
		}
		if err := pingPostgres(ctx, u.String(), 10*time.Second); err != nil {
			return nil, fmt.Errorf("%s=%s does not answer: %w", EnvPostgresURL, redactURL(u), err)
		}
		return &pgServer{adminURL: u, source: EnvPostgresURL}, nil
	}

	localErr := pingPostgres(ctx, defaultPostgresURL, probeTimeout)
	if localErr == nil {
		u, err := parsePostgresURL(defaultPostgresURL)
		if err != nil {
			return nil, err
		}
		return &pgServer{adminURL: u, source: "local server"}, nil
	}

	u, containerErr := startPostgresContainer(ctx)
	if containerErr == nil {
		return &pgServer{adminURL: u, source: "postgres:15 container"}, nil
	}
	return nil, fmt.Errorf("no PostgreSQL server available:\n"+
		"  - %s is not set\n"+
		"  - %s does not answer: %v\n"+
		"  - starting a postgres:15 container with testcontainers failed: %v\n"+
		"Run `make services` (installs, configures and starts a local PostgreSQL with wal_level=logical) "+
		"or set %s to the URL of a PostgreSQL server with wal_level=logical",
		EnvPostgresURL, redactURL(mustParse(defaultPostgresURL)), localErr, containerErr, EnvPostgresURL)
}

func parsePostgresURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing PostgreSQL URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("PostgreSQL URL %s: scheme must be postgres:// or postgresql://", redactURL(u))
	}
	return u, nil
}

func mustParse(raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return u
}

// redactURL hides the password of u for messages.
func redactURL(u *url.URL) string { return u.Redacted() }

func pingPostgres(ctx context.Context, connURL string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

func startPostgresContainer(ctx context.Context) (*url.URL, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        "postgres:15",
			ExposedPorts: []string{"5432/tcp"},
			Env:          map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust"},
			Cmd: []string{"postgres",
				"-c", "wal_level=logical",
				"-c", "max_replication_slots=64",
				"-c", "max_wal_senders=64",
				"-c", "max_connections=300",
			},
			WaitingFor: wait.ForAll(
				// The entrypoint starts a temporary server for initdb
				// first; the second message is the real server.
				wait.ForLog("database system is ready to accept connections").WithOccurrence(2),
				wait.ForListeningPort("5432/tcp"),
			),
		},
		Started: true,
	})
	if err != nil {
		if c != nil {
			_ = c.Terminate(context.Background())
		}
		return nil, err
	}
	hostPort, err := c.PortEndpoint(ctx, "5432/tcp", "")
	if err != nil {
		_ = c.Terminate(context.Background())
		return nil, err
	}
	u := &url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     hostPort,
		Path:     "/postgres",
		RawQuery: "sslmode=disable",
	}
	if err := pingPostgres(ctx, u.String(), 30*time.Second); err != nil {
		_ = c.Terminate(context.Background())
		return nil, err
	}
	return u, nil
}

// databaseURL returns the admin URL with the database replaced by name.
func (s *pgServer) databaseURL(name string) string {
	u := *s.adminURL
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

func (s *pgServer) connectAdmin(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, s.adminURL.String())
}

// Postgres creates a fresh database with a unique name
// (duplex_t_<sanitized test name>_<8 random hex digits>, at most 63 bytes)
// and returns it with an open connection pool.
//
// The cleanup registered on t closes the pool, drops the replication slots
// of the database (terminating the walsenders that use them), terminates
// the remaining sessions and drops the database. If no server is available
// the test fails with instructions; it is never skipped.
func Postgres(t testing.TB) *DB {
	t.Helper()
	srv, err := postgresServer()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}

	name := databaseName(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if err := srv.createDatabase(ctx, name); err != nil {
		t.Fatalf("testenv: creating database %s on %s: %v", name, srv.source, err)
	}
	db := &DB{URL: srv.databaseURL(name), Name: name}
	t.Cleanup(func() {
		if db.Pool != nil {
			db.Pool.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := srv.dropDatabase(ctx, name); err != nil {
			t.Errorf("testenv: dropping database %s: %v (run `make clean-db` to remove leftovers)", name, err)
		}
	})

	pool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		t.Fatalf("testenv: connecting to %s: %v", name, err)
	}
	db.Pool = pool
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("testenv: connecting to %s: %v", name, err)
	}
	return db
}

// databaseName returns duplex_t_<sanitized test name>_<8 hex>, <= 63 bytes.
func databaseName(t testing.TB) string {
	t.Helper()
	suffix := randomHex(t, 4)
	const maxLen = 63 // NAMEDATALEN - 1
	budget := maxLen - len(dbPrefix) - 1 - len(suffix)
	name := truncate(sanitize(t.Name()), budget)
	if name == "" {
		return dbPrefix + suffix
	}
	return dbPrefix + name + "_" + suffix
}

func (s *pgServer) createDatabase(ctx context.Context, name string) error {
	conn, err := s.connectAdmin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, sql)
		// 55006 object_in_use: "source database "template1" is being
		// accessed by other users" — someone is briefly connected to the
		// template; retry.
		if err == nil || !isSQLState(err, "55006") || attempt >= 20 {
			return err
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

// dropDatabase removes the database and everything that pins it: logical
// replication slots (and the walsenders streaming from them), subscriptions
// and sessions.
func (s *pgServer) dropDatabase(ctx context.Context, name string) error {
	conn, err := s.connectAdmin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	var errs []error
	if err := dropSubscriptions(ctx, conn, s.databaseURL(name), name); err != nil {
		errs = append(errs, err)
	}
	if err := dropSlots(ctx, conn, name); err != nil {
		errs = append(errs, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
		errs = append(errs, fmt.Errorf("terminating sessions: %w", err))
	}

	sql := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, sql)
		if err == nil || attempt >= 10 {
			break
		}
		// A slot may have been created concurrently (e.g. by a goroutine
		// of the test that outlived it); drop slots again and retry.
		_ = dropSlots(ctx, conn, name)
		if sleep(ctx, 200*time.Millisecond) != nil {
			break
		}
	}
	if err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// dropSlots drops every replication slot of database name, terminating the
// walsender that holds an active slot first.
func dropSlots(ctx context.Context, conn *pgx.Conn, name string) error {
	rows, err := conn.Query(ctx, `SELECT slot_name FROM pg_replication_slots WHERE database = $1`, name)
	if err != nil {
		return fmt.Errorf("listing replication slots: %w", err)
	}
	slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing replication slots: %w", err)
	}
	var errs []error
	for _, slot := range slots {
		if err := dropSlot(ctx, conn, slot); err != nil {
			errs = append(errs, fmt.Errorf("dropping replication slot %s: %w", slot, err))
		}
	}
	return errors.Join(errs...)
}

func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		// Terminate the walsender (or backend) using the slot, if any.
		_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		if err != nil {
			return err
		}
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE slot_name = $1`, slot)
		if err == nil {
			return nil
		}
		// 55006 object_in_use: "replication slot ... is active for PID ...";
		// the terminated walsender has not exited yet.
		if !isSQLState(err, "55006") {
			return err
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return err
}

// dropSubscriptions drops the subscriptions living in database name (they
// prevent DROP DATABASE). It must connect to that database to do so.
func dropSubscriptions(ctx context.Context, admin *pgx.Conn, dbURL, name string) error {
	rows, err := admin.Query(ctx, `SELECT s.subname FROM pg_subscription s
		JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = $1`, name)
	if err != nil {
		return fmt.Errorf("listing subscriptions: %w", err)
	}
	subs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(subs) == 0 {
		if err != nil {
			return fmt.Errorf("listing subscriptions: %w", err)
		}
		return nil
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("dropping subscriptions: %w", err)
	}
	defer conn.Close(context.Background())
	var errs []error
	for _, sub := range subs {
		id := pgx.Identifier{sub}.Sanitize()
		// Detach the remote slot so DROP SUBSCRIPTION does not need to
		// reach the publisher (its slots are dropped separately).
		for _, sql := range []string{
			"ALTER SUBSCRIPTION " + id + " DISABLE",
			"ALTER SUBSCRIPTION " + id + " SET (slot_name = NONE)",
			"DROP SUBSCRIPTION " + id,
		} {
			if _, err := conn.Exec(ctx, sql); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", sql, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}

func isSQLState(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// RequireLogical fails the test unless the server of db runs with
// wal_level=logical, which logical replication (pgoutput) needs.
func RequireLogical(t testing.TB, db *DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var level string
	if err := db.Pool.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		t.Fatalf("testenv: reading wal_level: %v", err)
	}
	if level != "logical" {
		t.Fatalf("testenv: PostgreSQL at %s has wal_level=%s, logical replication needs wal_level=logical: "+
			"run `make services` (sets it and restarts the local cluster) or point %s at a server with wal_level=logical",
			hostOf(db.URL), level, EnvPostgresURL)
	}
}

// hostOf returns host:port of a URL, for messages.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "5432")
	}
	return u.Host
}
