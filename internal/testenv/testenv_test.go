package testenv

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// admin opens a connection to the admin database of the test server.
func admin(t *testing.T) *pgx.Conn {
	t.Helper()
	srv, err := postgresServer()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := srv.connectAdmin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func databaseExists(t *testing.T, conn *pgx.Conn, name string) bool {
	t.Helper()
	var exists bool
	err := conn.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	require.NoError(t, err)
	return exists
}

func slotExists(t *testing.T, conn *pgx.Conn, slot string) bool {
	t.Helper()
	var exists bool
	err := conn.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", slot).Scan(&exists)
	require.NoError(t, err)
	return exists
}

var dbNameRE = regexp.MustCompile(`^duplex_t_[a-z0-9_]*_?[0-9a-f]{8}$`)

func TestPostgresParallelDatabasesAreDistinctAndDropped(t *testing.T) {
	conn := admin(t)
	var (
		mu    sync.Mutex
		names []string
	)
	t.Run("group", func(t *testing.T) {
		for i := range 2 {
			t.Run(fmt.Sprintf("db%d", i), func(t *testing.T) {
				t.Parallel()
				db := Postgres(t)
				require.Regexp(t, dbNameRE, db.Name)
				require.LessOrEqual(t, len(db.Name), 63)
				var current string
				require.NoError(t, db.Pool.QueryRow(context.Background(), "SELECT current_database()").Scan(&current))
				require.Equal(t, db.Name, current)
				// Each database is private: a table created here is not
				// visible in the other one.
				_, err := db.Pool.Exec(context.Background(), "CREATE TABLE t (id int PRIMARY KEY)")
				require.NoError(t, err)
				mu.Lock()
				names = append(names, db.Name)
				mu.Unlock()
			})
		}
	})
	require.Len(t, names, 2)
	require.NotEqual(t, names[0], names[1])
	for _, name := range names {
		require.False(t, databaseExists(t, conn, name), "database %s still exists after cleanup", name)
	}
}

func TestPostgresCleanupDropsSlotsAndActiveWalsenders(t *testing.T) {
	conn := admin(t)
	var (
		dbName      string
		idleSlot    string
		activeSlot  string
		replConn    *pgconn.PgConn
		walsenderID uint32
	)
	t.Run("sub", func(t *testing.T) {
		db := Postgres(t)
		RequireLogical(t, db)
		dbName = db.Name
		ctx := context.Background()

		_, err := db.Pool.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text)")
		require.NoError(t, err)
		pub := UniqueName(t, "pub")
		_, err = db.Pool.Exec(ctx, "CREATE PUBLICATION "+pub+" FOR ALL TABLES")
		require.NoError(t, err)

		// An inactive slot created over SQL.
		idleSlot = UniqueName(t, "idle")
		_, err = db.Pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", idleSlot)
		require.NoError(t, err)

		// An active slot: a walsender streaming from it that the test
		// deliberately leaves running; the cleanup must terminate it.
		activeSlot = UniqueName(t, "active")
		replConn, err = pgconn.Connect(ctx, db.ReplicationURL())
		require.NoError(t, err)
		walsenderID = replConn.PID()
		_, err = replConn.Exec(ctx, "CREATE_REPLICATION_SLOT "+activeSlot+" LOGICAL pgoutput").ReadAll()
		require.NoError(t, err)
		replConn.Frontend().Send(&pgproto3.Query{String: fmt.Sprintf(
			"START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', publication_names '%s')", activeSlot, pub)})
		require.NoError(t, replConn.Frontend().Flush())
		for {
			msg, err := replConn.ReceiveMessage(ctx)
			require.NoError(t, err)
			if _, ok := msg.(*pgproto3.CopyBothResponse); ok {
				break
			}
			if e, ok := msg.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("START_REPLICATION: %s", e.Message)
			}
		}

		var active bool
		require.NoError(t, db.Pool.QueryRow(ctx,
			"SELECT active FROM pg_replication_slots WHERE slot_name = $1", activeSlot).Scan(&active))
		require.True(t, active)
		require.True(t, slotExists(t, conn, idleSlot))
	})
	t.Cleanup(func() { _ = replConn.Close(context.Background()) })

	require.NotEmpty(t, dbName)
	require.False(t, databaseExists(t, conn, dbName), "database %s still exists after cleanup", dbName)
	require.False(t, slotExists(t, conn, idleSlot), "slot %s still exists", idleSlot)
	require.False(t, slotExists(t, conn, activeSlot), "slot %s still exists", activeSlot)
	var walsenderAlive bool
	require.NoError(t, conn.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", walsenderID).Scan(&walsenderAlive))
	require.False(t, walsenderAlive, "walsender %d still running", walsenderID)
}

func TestPostgresCleanupTerminatesOpenSessions(t *testing.T) {
	// A session the test forgot to close, idle in a transaction holding a
	// lock, must not prevent the database from being dropped.
	conn := admin(t)
	var (
		name     string
		leftover *pgx.Conn
	)
	t.Run("sub", func(t *testing.T) {
		db := Postgres(t)
		name = db.Name
		ctx := context.Background()
		var err error
		leftover, err = pgx.Connect(ctx, db.URL)
		require.NoError(t, err)
		_, err = leftover.Exec(ctx, "BEGIN; CREATE TABLE t (id int); LOCK TABLE t")
		require.NoError(t, err)
	})
	t.Cleanup(func() { _ = leftover.Close(context.Background()) })
	require.NotEmpty(t, name)
	require.False(t, databaseExists(t, conn, name))
}

func TestReplicationURL(t *testing.T) {
	db := Postgres(t)
	RequireLogical(t, db)
	u := db.ReplicationURL()
	require.Contains(t, u, "replication=database")
	require.Contains(t, u, "/"+db.Name)
	require.NotContains(t, db.URL, "replication=")

	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, u)
	require.NoError(t, err)
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.Len(t, res[0].Rows, 1)
	// Fourth column: the database this logical replication connection is on.
	require.Equal(t, db.Name, string(res[0].Rows[0][3]))
}

func TestDatabaseNameLongTestName(t *testing.T) {
	t.Run(strings.Repeat("VeryLong/Name With-Spaces ", 6), func(t *testing.T) {
		db := Postgres(t)
		require.LessOrEqual(t, len(db.Name), 63)
		require.Regexp(t, dbNameRE, db.Name)
		require.True(t, strings.HasPrefix(db.Name, "duplex_t_testdatabasenamelongtestname_verylong_name"), db.Name)
	})
}

var uniqueNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

func TestUniqueName(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		n := UniqueName(t, "slot")
		require.Regexp(t, uniqueNameRE, n)
		require.LessOrEqual(t, len(n), 50)
		require.True(t, strings.HasPrefix(n, "slot_testuniquename_"), n)
		require.False(t, seen[n], "duplicate %s", n)
		seen[n] = true
	}

	t.Run(strings.Repeat("Sub Test ", 20), func(t *testing.T) {
		for _, prefix := range []string{"", "Pub-", "1abc", strings.Repeat("p", 80), "__x__"} {
			n := UniqueName(t, prefix)
			require.Regexp(t, uniqueNameRE, n, "prefix %q", prefix)
			require.LessOrEqual(t, len(n), 50, "prefix %q", prefix)
		}
	})

	// The names are usable unquoted as identifiers.
	db := Postgres(t)
	schema := UniqueName(t, "schema")
	_, err := db.Pool.Exec(context.Background(), "CREATE SCHEMA "+schema)
	require.NoError(t, err)
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"TestFoo/bar_baz":  "testfoo_bar_baz",
		"  A--B  ":         "a_b",
		"__x__":            "x",
		"Ünïcode/名前/9":     "n_code_9",
		"":                 "",
		"Test/#01/sub-(2)": "test_01_sub_2",
	} {
		require.Equal(t, want, sanitize(in), "sanitize(%q)", in)
	}
}

func TestRedisPrefixKeysRemovedAfterCleanup(t *testing.T) {
	ctx := context.Background()
	var (
		prefix string
		url    string
	)
	outside := "duplex_t_outside:" + UniqueName(t, "k")
	t.Run("sub", func(t *testing.T) {
		r := Redis(t)
		require.True(t, strings.HasPrefix(r.Prefix, "duplex_t:testredisprefixkeysremovedaftercleanup_sub:"), r.Prefix)
		require.True(t, strings.HasSuffix(r.Prefix, ":"))
		prefix, url = r.Prefix, r.URL

		// More keys than one SCAN batch.
		pipe := r.Client.Pipeline()
		for i := range 2500 {
			pipe.Set(ctx, fmt.Sprintf("%skey%d", r.Prefix, i), i, 0)
		}
		pipe.HSet(ctx, r.Prefix+"hash", "f", "v")
		pipe.Set(ctx, outside, "keep", time.Minute)
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
		n, err := r.Client.Exists(ctx, r.Prefix+"key0", r.Prefix+"key2499", r.Prefix+"hash").Result()
		require.NoError(t, err)
		require.EqualValues(t, 3, n)
	})

	c, err := newRedisClient(url)
	require.NoError(t, err)
	defer c.Close()
	keys, _, err := c.Scan(ctx, 0, prefix+"*", 100000).Result()
	require.NoError(t, err)
	require.Empty(t, keys, "keys under %s survived cleanup", prefix)
	// Keys outside the prefix are untouched.
	v, err := c.Get(ctx, outside).Result()
	require.NoError(t, err)
	require.Equal(t, "keep", v)
	require.NoError(t, c.Del(ctx, outside).Err())
}

func TestRedisParallelPrefixesDistinct(t *testing.T) {
	var (
		mu       sync.Mutex
		prefixes = map[string]bool{}
	)
	t.Run("group", func(t *testing.T) {
		for i := range 4 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				r := Redis(t)
				require.NoError(t, r.Client.Set(context.Background(), r.Prefix+"x", 1, 0).Err())
				mu.Lock()
				prefixes[r.Prefix] = true
				mu.Unlock()
			})
		}
	})
	require.Len(t, prefixes, 4)
}
