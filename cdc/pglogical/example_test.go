package pglogical_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/cdc/pglogical"
	"github.com/duplexsync/duplex/internal/testenv"
)

// A Source streams the committed changes of its tables through a logical
// replication slot: inserts, updates with their before image (REPLICA
// IDENTITY FULL) and deletes, in commit order. The Pipeline acknowledges
// what it applied; here the callback does.
func Example() {
	ctx := context.Background()
	// A fresh database for the example, dropped with its slot at the end.
	db, drop, err := testenv.ExampleDB(ctx, "pglogical")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer drop()
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE customers (id bigint PRIMARY KEY, email text);
		ALTER TABLE customers REPLICA IDENTITY FULL`); err != nil {
		fmt.Println(err)
		return
	}

	src, err := pglogical.New(ctx, pglogical.Config{
		ConnString: db.URL,
		Sync:       db.Name, // slots are per server: a name of its own for every run of the example
		System:     "crm",
		Tables:     []duplex.Table{{Schema: "public", Name: "customers"}},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()
	// Setup creates the publication and the slot: changes from here on are
	// captured. (Stream calls it too; a Pipeline resuming from a stored
	// position makes a missing slot an error.)
	if err := src.Setup(ctx, false); err != nil {
		fmt.Println(err)
		return
	}
	for _, sql := range []string{
		`INSERT INTO customers VALUES (1, 'ada@example.com')`,
		`UPDATE customers SET email = 'ada@lovelace.example' WHERE id = 1`,
		`DELETE FROM customers WHERE id = 1`,
	} {
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			fmt.Println(err)
			return
		}
	}

	streamCtx, stop := context.WithCancel(ctx)
	defer stop()
	seen := 0
	err = src.Stream(streamCtx, "", func(ctx context.Context, batch []duplex.Change) error {
		for _, c := range batch {
			fmt.Printf("%s %s %s before=%v after=%v\n", c.Op, c.Table, c.Key, c.Before["email"], c.After["email"])
			seen++
		}
		// Acknowledge once the batch is durably applied (here: printed).
		if err := src.Ack(ctx, batch[len(batch)-1].Position); err != nil {
			return err
		}
		if seen == 3 {
			stop() // Stream returns nil when its context ends
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// insert public.customers id=1 before=<nil> after=ada@example.com
	// update public.customers id=1 before=ada@example.com after=ada@lovelace.example
	// delete public.customers id=1 before=ada@lovelace.example after=<nil>
}
