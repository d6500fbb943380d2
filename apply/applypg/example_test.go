package applypg_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/apply/applypg"
	"github.com/duplexsync/duplex/internal/testenv"
)

// An Applier writes a batch in one transaction, together with the IDs of
// the changes it applied (the ledger that makes a replay harmless) and the
// source's checkpoint. A Pipeline calls it; here a batch is written by
// hand.
func Example() {
	ctx := context.Background()
	// A fresh database for the example, dropped at the end.
	db, drop, err := testenv.ExampleDB(ctx, "applypg")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer drop()
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE customers (id bigint PRIMARY KEY, email text, plan text)`); err != nil {
		fmt.Println(err)
		return
	}

	applier, err := applypg.New(ctx, db.Pool, applypg.Config{
		Sync:   db.Name, // replication origins are per server: a name of its own for every run of the example
		Target: "billing",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Its replication origin, which tags the sync's writes so that its own
	// change capture skips them, outlives the Applier: drop it with the sync.
	defer func() {
		if err := applier.DropOrigins(ctx); err != nil {
			fmt.Println(err)
		}
	}()

	customers := duplex.Table{Schema: "public", Name: "customers"}
	key := func(id int64) duplex.Key { return duplex.Key{{Name: "id", Value: id}} }
	change := func(id string) *duplex.Change {
		return &duplex.Change{ID: id, Origin: "crm", Position: duplex.Position(id)}
	}
	err = applier.Apply(ctx, &duplex.Batch{
		Source: "crm",
		Writes: []duplex.Write{
			{Op: duplex.OpInsert, Table: customers, Key: key(1), Set: duplex.Values{"id": int64(1), "email": "ada@example.com", "plan": "free"}, Change: change("crm/1")},
			{Op: duplex.OpInsert, Table: customers, Key: key(2), Set: duplex.Values{"id": int64(2), "email": "bob@example.com", "plan": "free"}, Change: change("crm/2")},
			// An update names the fields it sets, and what it expects to find
			// there: a row changed since fails the batch with ErrStale.
			{Op: duplex.OpUpdate, Table: customers, Key: key(1), Set: duplex.Values{"plan": "team"}, Expect: duplex.Values{"plan": "free"}, Change: change("crm/3")},
		},
		Checkpoint: "crm/3",
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	rows, err := applier.Lookup(ctx, customers, []duplex.Key{key(1), key(2)})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range rows {
		fmt.Println(r["id"], r["email"], r["plan"])
	}
	applied, err := applier.Applied(ctx, []string{"crm/1", "crm/3", "crm/4"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("applied crm/1, crm/3, crm/4:", applied)
	checkpoint, err := applier.Checkpoint(ctx, "crm")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("resume crm after:", checkpoint)
	// Output:
	// 1 ada@example.com team
	// 2 bob@example.com free
	// applied crm/1, crm/3, crm/4: [true true false]
	// resume crm after: crm/3
}
