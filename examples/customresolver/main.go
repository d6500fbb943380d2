// Command customresolver shows a custom conflict resolver written in a few
// lines and wired into a two-way sync.
//
// Two inventory systems (a warehouse and a shop) both change stock counts
// and product notes. The resolver merges stock by deltas (both sides'
// sales and deliveries count) and keeps the longer note (ties go to the
// warehouse, so both directions decide alike); every other conflict goes to
// the dead-letter queue. It runs on in-memory databases: no services needed.
//
//	go run ./examples/customresolver
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/memdb"
	"github.com/duplexsync/duplex/resolve"
)

var products = duplex.Table{Schema: "public", Name: "products"}

// longerNote decides a conflicting note: the longer text wins; equal
// lengths go to the warehouse. It is deterministic: both directions of the
// sync reach the same answer.
var longerNote = duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
	if !c.IsConflicting("note") {
		return nil
	}
	src, _ := c.SourceValue("note")
	dst, _ := c.TargetValue("note")
	s, _ := src.(string)
	d, _ := dst.(string)
	switch {
	case len(s) > len(d), len(s) == len(d) && c.Direction.From == "warehouse":
		c.Take("note", "longer-note")
	default:
		c.Keep("note", "longer-note")
	}
	return nil
})

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "customresolver:", err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	ctx := context.Background()
	warehouse, shop := memdb.New("warehouse"), memdb.New("shop")
	for _, db := range []*memdb.DB{warehouse, shop} {
		if err := db.CreateTable(products, memdb.TableOptions{Key: []string{"sku"}, Columns: []string{"sku", "stock", "note"}}); err != nil {
			return err
		}
		if err := db.Insert(products, duplex.Values{"sku": "A-1", "stock": int64(100), "note": "blue"}); err != nil {
			return err
		}
		// Start the sync after the shared starting point.
		last := db.Changes()[len(db.Changes())-1].Position
		if err := db.Source(memdb.SourceConfig{Slot: "sync"}).Ack(ctx, last); err != nil {
			return err
		}
		// Both hold it as agreed, as if an earlier sync had copied it.
		if err := db.AgreeRows(products); err != nil {
			return err
		}
	}
	sku := duplex.Key{{Name: "sku", Value: "A-1"}}
	// While the sync is down: the shop sells 3, the warehouse receives 20;
	// both edit the note.
	if err := shop.Update(products, sku, duplex.Values{"stock": int64(97), "note": "blue, popular"}); err != nil {
		return err
	}
	if err := warehouse.Update(products, sku, duplex.Values{"stock": int64(120), "note": "navy blue"}); err != nil {
		return err
	}

	deadLetters := dlq.NewMemory(dlq.MemoryConfig{})
	endpoint := func(db *memdb.DB) duplex.Endpoint {
		return duplex.Endpoint{
			Name:    db.Name(),
			Source:  db.Source(memdb.SourceConfig{Slot: "sync", SkipOrigins: []string{"duplex"}, StopWhenIdle: true}),
			Applier: db.Applier("duplex"),
		}
	}
	sync, err := duplex.NewSync(&duplex.SyncConfig{
		Name: "inventory", A: endpoint(warehouse), B: endpoint(shop),
		Resolver:    duplex.Chain(resolve.CounterDelta("stock"), longerNote, resolve.DeadLetterAll()),
		DeadLetters: deadLetters,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	if err := sync.Run(ctx); err != nil {
		return err
	}
	w, s := warehouse.Get(products, sku), shop.Get(products, sku)
	fmt.Fprintf(out, "warehouse: stock=%v note=%q\n", w["stock"], w["note"])
	fmt.Fprintf(out, "shop:      stock=%v note=%q\n", s["stock"], s["note"])
	_, n, err := deadLetters.List(ctx, dlq.Filter{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "dead letters: %d\n", n)
	if !duplex.Equal(w["stock"], s["stock"]) || w["note"] != s["note"] {
		return fmt.Errorf("the two systems differ")
	}
	return nil
}
