package testenv

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ExampleDB creates a fresh database for a testable example, which has no
// testing.T to clean up after it (see Scratch), with an open pool. The
// example defers drop: it closes the pool and drops the database with its
// replication slots, as the cleanup of [Postgres] does, and prints what
// went wrong to standard output, where the example's Output check sees it.
func ExampleDB(ctx context.Context, name string) (db *DB, drop func(), err error) {
	dbName, url, dropDB, err := scratch(ctx, "example_"+name, "")
	if err != nil {
		return nil, nil, err
	}
	db = &DB{URL: url, Name: dbName}
	dropErr := func() error {
		if db.Pool != nil {
			db.Pool.Close()
		}
		if err := dropDB(); err != nil {
			return fmt.Errorf("testenv: dropping database %s: %w (run `make clean-db` to remove leftovers)", db.Name, err)
		}
		return nil
	}
	if db.Pool, err = pgxpool.New(ctx, db.URL); err == nil {
		err = db.Pool.Ping(ctx)
	}
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("testenv: connecting to %s: %w", db.Name, err), dropErr())
	}
	drop = func() {
		if err := dropErr(); err != nil {
			fmt.Println(err)
		}
	}
	return db, drop, nil
}
