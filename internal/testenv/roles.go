package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Role creates a login role without privileges for the test (roles are
// cluster-wide: its name is unique) and drops it, with what it owns and
// was granted in db, when the test ends, before db itself is dropped.
func Role(t testing.TB, db *DB) string {
	t.Helper()
	role := UniqueName(t, "r")
	if _, err := db.Pool.Exec(context.Background(), "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN"); err != nil {
		t.Fatalf("testenv: create role %s: %v", role, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, sql := range []string{"DROP OWNED BY " + pgx.Identifier{role}.Sanitize(), "DROP ROLE " + pgx.Identifier{role}.Sanitize()} {
			if _, err := db.Pool.Exec(ctx, sql); err != nil {
				t.Errorf("testenv: %s: %v", sql, err)
			}
		}
	})
	return role
}

// ConnectAs returns a pool connected to db as role, closed when the test
// ends.
func ConnectAs(t testing.TB, db *DB, role string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cfg.ConnConfig.User = role
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("testenv: connect to %s as %s: %v", db.Name, role, err)
	}
	t.Cleanup(pool.Close)
	return pool
}
