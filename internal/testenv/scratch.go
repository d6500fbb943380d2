package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// Scratch creates a fresh database named after prefix for code that has
// no *testing.T (a testable example, a program run by a test), on the
// server Postgres uses, and returns its URL and the function that drops it
// with its replication slots and the replication origins whose names
// start with originPrefix ("": none).
func Scratch(ctx context.Context, prefix, originPrefix string) (url string, drop func() error, err error) {
	_, url, drop, err = scratch(ctx, prefix, originPrefix)
	return url, drop, err
}

// scratch is Scratch, which also returns the database's name.
func scratch(ctx context.Context, prefix, originPrefix string) (name, url string, drop func() error, err error) {
	srv, err := postgresServer()
	if err != nil {
		return "", "", nil, fmt.Errorf("testenv: %w", err)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", "", nil, fmt.Errorf("testenv: reading random bytes: %w", err)
	}
	name = truncate(dbPrefix+sanitize(prefix), 63-9) + "_" + hex.EncodeToString(b)
	if err := srv.createDatabase(ctx, name); err != nil {
		return "", "", nil, fmt.Errorf("testenv: creating database %s on %s: %w", name, srv.source, err)
	}
	drop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		err := srv.dropDatabase(ctx, name)
		if originPrefix == "" {
			return err
		}
		conn, cerr := srv.connectAdmin(ctx)
		if cerr != nil {
			return errors.Join(err, cerr)
		}
		defer conn.Close(context.Background())
		_, oerr := conn.Exec(ctx, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE starts_with(roname, $1)`, originPrefix)
		return errors.Join(err, oerr)
	}
	return name, srv.databaseURL(name), drop, nil
}
