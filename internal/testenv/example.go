package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ExampleDB creates a fresh database for a testable example, which has no
// testing.T to clean up after it: duplex_t_example_<name>_<8 hex digits>,
// with an open pool. The caller runs drop when done: it closes the pool and
// drops the database with its replication slots, as the cleanup of
// [Postgres] does.
func ExampleDB(ctx context.Context, name string) (db *DB, drop func() error, err error) {
	srv, err := postgresServer()
	if err != nil {
		return nil, nil, fmt.Errorf("testenv: %w", err)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return nil, nil, fmt.Errorf("testenv: reading random bytes: %w", err)
	}
	suffix := hex.EncodeToString(b)
	dbName := dbPrefix + truncate(sanitize("example_"+name), 63-len(dbPrefix)-1-len(suffix)) + "_" + suffix
	if err := srv.createDatabase(ctx, dbName); err != nil {
		return nil, nil, fmt.Errorf("testenv: creating database %s on %s: %w", dbName, srv.source, err)
	}
	db = &DB{URL: srv.databaseURL(dbName), Name: dbName}
	drop = func() error {
		if db.Pool != nil {
			db.Pool.Close()
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err := srv.dropDatabase(ctx, dbName); err != nil {
			return fmt.Errorf("testenv: dropping database %s: %w (run `make clean-db` to remove leftovers)", dbName, err)
		}
		return nil
	}
	if db.Pool, err = pgxpool.New(ctx, db.URL); err == nil {
		err = db.Pool.Ping(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("testenv: connecting to %s: %w (and %w)", dbName, err, drop())
	}
	return db, drop, nil
}
