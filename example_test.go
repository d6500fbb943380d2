package duplex_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// printDLQ is a DeadLetterSink that prints what it receives.
type printDLQ struct{}

func (printDLQ) Put(_ context.Context, l *duplex.DeadLetter) error {
	fmt.Printf("dead letter: %s %s %s fields=%v\n", l.Reason, l.Direction, l.Change.Key, l.Conflict.Fields)
	return nil
}

// A two-way sync between two in-memory databases: edits to different fields
// of one row merge, an edit to the same field on both sides goes to the
// dead-letter queue, and nothing loops back.
func Example() {
	customers := duplex.Table{Schema: "public", Name: "customers"}
	crm, billing := memdb.New("crm"), memdb.New("billing")
	for _, db := range []*memdb.DB{crm, billing} {
		_ = db.CreateTable(customers, memdb.TableOptions{Key: []string{"id"}, Columns: []string{"id", "name", "plan"}})
		_ = db.Insert(customers, duplex.Values{"id": int64(1), "name": "Ada", "plan": "free"})
		_ = db.Insert(customers, duplex.Values{"id": int64(2), "name": "Bob", "plan": "free"})
	}
	id1, id2 := duplex.Key{{Name: "id", Value: int64(1)}}, duplex.Key{{Name: "id", Value: int64(2)}}

	endpoint := func(db *memdb.DB) duplex.Endpoint {
		return duplex.Endpoint{
			Name: db.Name(),
			// Start after the seed rows, and drop the sync's own writes (origin "duplex").
			Source:  db.Source(memdb.SourceConfig{Slot: "sync", SkipOrigins: []string{"duplex"}, StopWhenIdle: true}),
			Applier: db.Applier("duplex"),
		}
	}
	for _, db := range []*memdb.DB{crm, billing} {
		_ = db.Source(memdb.SourceConfig{Slot: "sync"}).Ack(context.Background(), db.Changes()[1].Position)
	}
	sync, err := duplex.NewSync(&duplex.SyncConfig{
		Name:        "crm-billing",
		A:           endpoint(crm),
		B:           endpoint(billing),
		DeadLetters: printDLQ{},
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Both systems held the seed rows before the sync started: Reconcile
	// records them as agreed, so later edits merge three-way.
	for _, id := range []duplex.Key{id1, id2} {
		if _, err := sync.Reconcile(context.Background(), customers, id); err != nil {
			fmt.Println(err)
		}
	}
	// Both sides edit while the sync is down.
	_ = crm.Update(customers, id1, duplex.Values{"name": "Ada Lovelace"}) // CRM renames
	_ = billing.Update(customers, id1, duplex.Values{"plan": "pro"})      // billing upgrades
	_ = crm.Update(customers, id2, duplex.Values{"plan": "team"})         // both change Bob's plan
	_ = billing.Update(customers, id2, duplex.Values{"plan": "pro"})
	if err := sync.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	fmt.Println("crm:    ", crm.Get(customers, id1), crm.Get(customers, id2))
	fmt.Println("billing:", billing.Get(customers, id1), billing.Get(customers, id2))
	// Unordered output:
	// dead letter: conflict crm_to_billing id=2 fields=[plan]
	// dead letter: conflict billing_to_crm id=2 fields=[plan]
	// crm:     map[id:1 name:Ada Lovelace plan:pro] map[id:2 name:Bob plan:team]
	// billing: map[id:1 name:Ada Lovelace plan:pro] map[id:2 name:Bob plan:pro]
}

// A one-way Pipeline from one in-memory database to another: it applies
// what the source captured, in batches, and stops when the source is idle
// (StopWhenIdle; a real source streams until ctx ends).
func ExampleNewPipeline() {
	orders := duplex.Table{Schema: "public", Name: "orders"}
	shop, warehouse := memdb.New("shop"), memdb.New("warehouse")
	for _, db := range []*memdb.DB{shop, warehouse} {
		_ = db.CreateTable(orders, memdb.TableOptions{Key: []string{"id"}, Columns: []string{"id", "item", "qty"}})
	}
	for i := int64(1); i <= 3; i++ {
		_ = shop.Insert(orders, duplex.Values{"id": i, "item": fmt.Sprint("item ", i), "qty": i * 10})
	}
	_ = shop.Update(orders, duplex.Key{{Name: "id", Value: int64(2)}}, duplex.Values{"qty": int64(25)})
	_ = shop.Delete(orders, duplex.Key{{Name: "id", Value: int64(3)}})

	p, err := duplex.NewPipeline(&duplex.Config{
		Name:        "shop-warehouse",
		Direction:   duplex.Direction{From: "shop", To: "warehouse"},
		Source:      shop.Source(memdb.SourceConfig{Slot: "warehouse", StopWhenIdle: true}),
		Target:      warehouse.Applier("duplex"),
		DeadLetters: printDLQ{},
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	for i := int64(1); i <= 3; i++ {
		fmt.Println(warehouse.Get(orders, duplex.Key{{Name: "id", Value: i}}))
	}
	// Output:
	// map[id:1 item:item 1 qty:10]
	// map[id:2 item:item 2 qty:25]
	// map[]
}
