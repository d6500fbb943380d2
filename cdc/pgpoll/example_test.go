package pgpoll_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pgpoll"
	"github.com/duplexsync/duplex/internal/testenv"
)

// A polling Source finds changed rows by their updated_at column, for
// databases where logical replication is not available; with tombstones
// (an AFTER DELETE trigger it installs) it sees deletes too.
func Example() {
	ctx := context.Background()
	// A fresh database for the example, dropped at the end.
	db, drop, err := testenv.ExampleDB(ctx, "pgpoll")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer drop()
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE customers (
		id bigint PRIMARY KEY, email text, updated_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		fmt.Println(err)
		return
	}

	src, err := pgpoll.New(ctx, pgpoll.Config{
		ConnString:      db.URL,
		Sync:            "crm-billing",
		System:          "crm",
		Tables:          []duplex.Table{{Schema: "public", Name: "customers"}},
		Column:          "updated_at",
		DeleteDetection: pgpoll.DeletesTombstones,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()
	// Setup creates the source's state tables and the tombstone trigger.
	if err := src.Setup(ctx); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO customers (id, email) VALUES (1, 'ada@example.com'), (2, 'bob@example.com')`); err != nil {
		fmt.Println(err)
		return
	}

	streamCtx, stop := context.WithCancel(ctx)
	defer stop()
	seen := 0
	err = src.Stream(streamCtx, "", func(ctx context.Context, batch []duplex.Change) error {
		for _, c := range batch {
			fmt.Printf("%s %s %s email=%v\n", c.Op, c.Table, c.Key, c.After["email"])
			seen++
		}
		if err := src.Ack(ctx, batch[len(batch)-1].Position); err != nil {
			return err
		}
		switch seen {
		case 2: // both rows are out: delete one
			if _, err := db.Pool.Exec(ctx, `DELETE FROM customers WHERE id = 2`); err != nil {
				return err
			}
		case 3:
			stop() // Stream returns nil when its context ends
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// insert public.customers id=1 email=ada@example.com
	// insert public.customers id=2 email=bob@example.com
	// delete public.customers id=2 email=<nil>
}
