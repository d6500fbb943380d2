package resolve_test

import (
	"context"
	"fmt"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
	"github.com/duplexsync/duplex/resolve"
)

var customers = duplex.Table{Schema: "public", Name: "customers"}

// replicas returns two in-memory systems, "crm" and "billing", holding the
// same customers rows, with their sync slots past those rows.
func replicas(columns []string, rows ...duplex.Values) (crm, billing *memdb.DB) {
	crm, billing = memdb.New("crm"), memdb.New("billing")
	for _, db := range []*memdb.DB{crm, billing} {
		_ = db.CreateTable(customers, memdb.TableOptions{Key: []string{"id"}, Columns: columns})
		for _, r := range rows {
			_ = db.Insert(customers, r.Clone())
		}
		log := db.Changes()
		_ = db.Source(memdb.SourceConfig{Slot: "sync"}).Ack(context.Background(), log[len(log)-1].Position)
		_ = db.AgreeRows(customers) // as if synced: later edits merge three-way
	}
	return crm, billing
}

// printDeadLetters is a DeadLetterSink that prints what it receives.
type printDeadLetters struct{}

func (printDeadLetters) Put(_ context.Context, l *duplex.DeadLetter) error {
	fmt.Printf("dead letter %s %s: %s\n", l.Direction, l.Change.Key, l.Error)
	return nil
}

// syncOnce runs a two-way sync of crm and billing until both are idle.
func syncOnce(crm, billing *memdb.DB, r duplex.Resolver) {
	endpoint := func(db *memdb.DB) duplex.Endpoint {
		return duplex.Endpoint{
			Name:    db.Name(),
			Source:  db.Source(memdb.SourceConfig{Slot: "sync", SkipOrigins: []string{"duplex"}, StopWhenIdle: true}),
			Applier: db.Applier("duplex"),
		}
	}
	s, err := duplex.NewSync(&duplex.SyncConfig{
		Name: "crm-billing", A: endpoint(crm), B: endpoint(billing),
		Resolver: r, DeadLetters: printDeadLetters{}, Logger: discard,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := s.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
}

var id1, id2 = duplex.Key{{Name: "id", Value: int64(1)}}, duplex.Key{{Name: "id", Value: int64(2)}}

// Field authority, then last-write-wins on an updated_at column, then
// manual review for what is left: the usual chain.
func Example() {
	crm, billing := replicas([]string{"id", "name", "plan", "note", "updated_at"},
		duplex.Values{"id": int64(1), "name": "Ada", "plan": "free", "note": "", "updated_at": time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)})
	at := func(h, m int) time.Time { return time.Date(2025, 3, 1, h, m, 0, 0, time.UTC) }
	// While the sync is down both systems edit customer 1.
	_ = crm.Update(customers, id1, duplex.Values{"name": "Ada Lovelace", "plan": "team", "note": "call back", "updated_at": at(10, 0)})
	_ = billing.Update(customers, id1, duplex.Values{"name": "A. Lovelace", "plan": "pro", "note": "paid", "updated_at": at(10, 5)})

	authority, err := resolve.ParseAuthority("customers.name=crm,customers.plan=billing,note=both,updated_at=both")
	if err != nil {
		fmt.Println(err)
		return
	}
	lww, err := resolve.NewLWW("updated_at", time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	lww.Now = func() time.Time { return at(12, 0) }
	syncOnce(crm, billing, duplex.Chain(authority, lww, resolve.DeadLetterAll()))

	fmt.Println("crm:    ", crm.Get(customers, id1))
	fmt.Println("billing:", billing.Get(customers, id1))
	// Output:
	// crm:     map[id:1 name:Ada Lovelace note:paid plan:pro updated_at:2025-03-01 10:05:00 +0000 UTC]
	// billing: map[id:1 name:Ada Lovelace note:paid plan:pro updated_at:2025-03-01 10:05:00 +0000 UTC]
}

// The CRM owns names and billing owns payment status; a change to an owned
// field from the other system is not propagated (the owner's value is
// written back over it), and the owner wins conflicts.
func ExampleParseAuthority() {
	crm, billing := replicas([]string{"id", "name", "payment_status"},
		duplex.Values{"id": int64(1), "name": "Ada", "payment_status": "due"},
		duplex.Values{"id": int64(2), "name": "Bob", "payment_status": "due"})
	_ = crm.Update(customers, id1, duplex.Values{"name": "Ada Lovelace", "payment_status": "paid?"})
	_ = billing.Update(customers, id1, duplex.Values{"name": "A. Lovelace", "payment_status": "paid"})
	_ = crm.Update(customers, id2, duplex.Values{"payment_status": "waived"}) // not the CRM's call

	authority, err := resolve.ParseAuthority("customers.name=crm,payment_status=billing")
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := authority.Validate([]string{"crm", "billing"}, map[duplex.Table][]string{customers: {"id", "name", "payment_status"}}); err != nil {
		fmt.Println(err)
		return
	}
	syncOnce(crm, billing, authority)
	fmt.Println("crm:    ", crm.Get(customers, id1), crm.Get(customers, id2))
	fmt.Println("billing:", billing.Get(customers, id1), billing.Get(customers, id2))
	// Output:
	// crm:     map[id:1 name:Ada Lovelace payment_status:paid] map[id:2 name:Bob payment_status:due]
	// billing: map[id:1 name:Ada Lovelace payment_status:paid] map[id:2 name:Bob payment_status:due]
}

// The newer edit wins; edits closer than the clock-skew tolerance go to the
// dead-letter queue, and both systems keep their own version.
func ExampleLWW() {
	crm, billing := replicas([]string{"id", "email", "updated_at"},
		duplex.Values{"id": int64(1), "email": "ada@old.example", "updated_at": time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)},
		duplex.Values{"id": int64(2), "email": "bob@old.example", "updated_at": time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)})
	at := func(m, s int) time.Time { return time.Date(2025, 3, 1, 10, m, s, 0, time.UTC) }
	_ = crm.Update(customers, id1, duplex.Values{"email": "ada@crm.example", "updated_at": at(0, 0)})
	_ = billing.Update(customers, id1, duplex.Values{"email": "ada@billing.example", "updated_at": at(5, 0)})
	_ = crm.Update(customers, id2, duplex.Values{"email": "bob@crm.example", "updated_at": at(0, 0)})
	_ = billing.Update(customers, id2, duplex.Values{"email": "bob@billing.example", "updated_at": at(0, 1)})

	lww := &resolve.LWW{Column: "updated_at", Skew: 2 * time.Second, Now: func() time.Time { return at(30, 0) }}
	syncOnce(crm, billing, lww)
	fmt.Println("crm:    ", crm.Get(customers, id1)["email"], crm.Get(customers, id2)["email"])
	fmt.Println("billing:", billing.Get(customers, id1)["email"], billing.Get(customers, id2)["email"])
	// Unordered output:
	// dead letter crm_to_billing id=2: too close to call: crm at 2025-03-01T10:00:00Z, billing at 2025-03-01T10:00:01Z, 1s apart, within the skew tolerance 2s
	// dead letter billing_to_crm id=2: too close to call: billing at 2025-03-01T10:00:01Z, crm at 2025-03-01T10:00:00Z, 1s apart, within the skew tolerance 2s
	// crm:     ada@billing.example bob@crm.example
	// billing: ada@billing.example bob@billing.example
}

// Visits counted on both systems while the sync was down add up.
func ExampleCounterDelta() {
	crm, billing := replicas([]string{"id", "visits"}, duplex.Values{"id": int64(1), "visits": int64(10)})
	_ = crm.Update(customers, id1, duplex.Values{"visits": int64(13)})     // 3 visits
	_ = billing.Update(customers, id1, duplex.Values{"visits": int64(15)}) // 5 visits

	syncOnce(crm, billing, resolve.CounterDelta("visits"))
	fmt.Println(crm.Get(customers, id1)["visits"], billing.Get(customers, id1)["visits"])
	// Output: 18 18
}

// Tags added on both systems are kept; a tag one system removed is gone.
func ExampleUnionTags() {
	crm, billing := replicas([]string{"id", "tags"}, duplex.Values{"id": int64(1), "tags": []string{"trial", "vip"}})
	_ = crm.Update(customers, id1, duplex.Values{"tags": []string{"vip", "churn-risk"}})        // drops trial
	_ = billing.Update(customers, id1, duplex.Values{"tags": []string{"trial", "vip", "late"}}) // adds late

	syncOnce(crm, billing, resolve.UnionTags("tags"))
	fmt.Println(crm.Get(customers, id1)["tags"], billing.Get(customers, id1)["tags"])
	// Output: [churn-risk late vip] [churn-risk late vip]
}

// A system wins every conflict; conflict-free changes from both flow.
func ExampleSideWins() {
	crm, billing := replicas([]string{"id", "name", "plan"}, duplex.Values{"id": int64(1), "name": "Ada", "plan": "free"})
	_ = crm.Update(customers, id1, duplex.Values{"name": "Ada Lovelace", "plan": "team"})
	_ = billing.Update(customers, id1, duplex.Values{"plan": "pro"})

	syncOnce(crm, billing, resolve.SideWins("billing"))
	fmt.Println(crm.Get(customers, id1))
	fmt.Println(billing.Get(customers, id1))
	// Output:
	// map[id:1 name:Ada Lovelace plan:pro]
	// map[id:1 name:Ada Lovelace plan:pro]
}

// A custom resolver is a function of the conflict: here the longer note
// wins, equal lengths go to the CRM. It decides from what both directions
// see alike (lengths, a system's name; never "source" or "target"), so
// both reach the same answer. Package resolvetest checks that and more:
// run resolvetest.Run on it in a test.
func Example_customResolver() {
	longerNote := duplex.ResolverFunc(func(_ context.Context, c *duplex.Conflict) error {
		if !c.IsConflicting("note") {
			return nil // leave everything else to the next resolver
		}
		src, _ := c.SourceValue("note")
		dst, _ := c.TargetValue("note")
		s, _ := src.(string)
		d, _ := dst.(string)
		if len(s) > len(d) || len(s) == len(d) && c.Direction.From == "crm" {
			c.Take("note", "longer_note")
		} else {
			c.Keep("note", "longer_note")
		}
		return nil
	})
	crm, billing := replicas([]string{"id", "name", "note"}, duplex.Values{"id": int64(1), "name": "Ada", "note": "new"})
	_ = crm.Update(customers, id1, duplex.Values{"note": "called, wants a demo"})
	_ = billing.Update(customers, id1, duplex.Values{"name": "A. Lovelace", "note": "paid"})

	syncOnce(crm, billing, duplex.Chain(longerNote, resolve.DeadLetterAll()))
	fmt.Println(crm.Get(customers, id1))
	fmt.Println(billing.Get(customers, id1))
	// Output:
	// map[id:1 name:A. Lovelace note:called, wants a demo]
	// map[id:1 name:A. Lovelace note:called, wants a demo]
}
