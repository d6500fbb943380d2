package agreepg_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/agree/agreepg"
)

// An endpoint whose Applier does not keep agreement records itself (a
// custom Applier over a PostgreSQL database) keeps them in that database
// with a Store, so a restart merges against the same base as before it.
// (apply/applypg keeps them in its own transactions: use it where you can.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://sync@crm-db/crm")
	if err != nil {
		log.Fatal(err)
	}
	agreements, err := agreepg.New(ctx, pool, agreepg.Config{Sync: "crm-billing", System: "crm"})
	if err != nil {
		log.Fatal(err)
	}
	crm := duplex.Endpoint{Name: "crm", Agreements: agreements /* Source, Applier, ... */}
	_ = crm
}
