package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ExampleDB creates a fresh database for a testable example, which has no
// testing.T to clean up after it: duplex_t_example_<name>_<8 hex digits>,
// with an open pool. The example defers drop: it closes the pool and drops
// the database with its replication slots, as the cleanup of [Postgres]
// does, and prints what went wrong to standard output, where the example's
// Output check sees it.
func ExampleDB(ctx context.Context, name string) (db *DB, drop func(), err error) {
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
	dropErr := func() error {
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
		return nil, nil, errors.Join(fmt.Errorf("testenv: connecting to %s: %w", dbName, err), dropErr())
	}
	drop = func() {
		if err := dropErr(); err != nil {
			fmt.Println(err)
		}
	}
	return db, drop, nil
}
