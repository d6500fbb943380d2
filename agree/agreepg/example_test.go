package agreepg_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/agree/agreepg"
)

// A two-way sync keeps its agreed rows in one of its databases, so a
// restart merges against the same base as before it.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://sync@crm-db/crm")
	if err != nil {
		log.Fatal(err)
	}
	agreements, err := agreepg.New(ctx, pool, agreepg.Config{Sync: "crm-billing"})
	if err != nil {
		log.Fatal(err)
	}
	cfg := duplex.SyncConfig{Name: "crm-billing", Agreements: agreements /* A, B, Resolver, DeadLetters... */}
	_ = cfg
}
