// Package resolve holds the conflict resolvers of duplex: pure decisions
// on a [duplex.Conflict], with no I/O, each a small type implementing
// [duplex.Resolver].
//
// The Pipeline shows a resolver every change that would modify the target,
// with the fields at stake classified: fields both sides changed since they
// last agreed are conflicting; fields only the source changed are not. In a
// two-way [duplex.Sync] the resolver is asked once per merge of a row (by
// whichever direction merges it first) and its decision is written to both
// sides, so determinism across directions holds by construction; a resolver
// must still be deterministic for one-way Pipelines and for retries. A
// resolver decides fields (Take the source's value, Keep the target's, Set
// a merged value) or sends the whole change to the dead-letter queue, and
// leaves the rest to the next resolver. After the chain, undecided fields
// only the source changed take the source's value, and an undecided
// conflicting field sends the change to the DLQ with the target row left
// as it is.
//
// # Composing
//
// Resolvers compose with [duplex.Chain], each deciding what it knows and
// passing on the rest. The usual chain is ownership first, then time, then
// a person:
//
//	authority, err := resolve.ParseAuthority("customers.name=crm,customers.email=crm,payment_status=billing,last_activity=both")
//	lww, err := resolve.NewLWW("updated_at", 2*time.Second)
//	resolver := duplex.Chain(authority, lww, resolve.DeadLetterAll())
//
// Check the configuration at startup against the catalog with
// [Authority.Validate] and [LWW.ValidateColumn]: their errors name the
// rule or table at fault.
//
// Policies can differ by table with [ByTable]. Last-write-wins on an
// updated_at column where a table has one and on commit timestamps where
// it does not:
//
//	column, err := resolve.NewLWW("updated_at", 2*time.Second)
//	without, err := column.TablesWithoutColumn(schema) // a column that is not a timestamp is an error
//	commit := &resolve.LWW{Skew: 2 * time.Second}
//	tables := map[duplex.Table]duplex.Resolver{}
//	for _, t := range without {
//		tables[t] = commit
//	}
//	resolver := duplex.Chain(authority, resolve.ByTable{Tables: tables, Default: column})
//
// # Resolvers
//
//   - [Authority]: each field is owned by one system. The owner's change
//     wins; a non-owner's change to an owned field is not propagated (in a
//     two-way Sync the owner's value is written back over it).
//     For a row one side deleted and the other updated, an owner's edit
//     keeps the row and a delete by the owner of every contested field
//     wins; anything else is left to the next resolver.
//   - [LWW]: last write wins, on a timestamp column or on commit
//     timestamps. Times closer than the clock-skew tolerance, unknown times
//     (NULL, missing, a target that does not report commit times) and
//     clocks running ahead send the change to the DLQ with both versions.
//   - [SideWins]: one system wins every conflict.
//   - [ByTable]: each table's conflicts go to that table's resolver.
//   - [DeadLetterAll]: every conflict goes to the DLQ for a person.
//   - [CounterDelta] and [UnionTags]: merges written in a few lines with
//     [duplex.ResolverFunc], as examples of custom resolvers: counters add
//     both sides' increments, tag lists keep what either side added.
//
// # Determinism
//
// Both directions of a sync see the same conflict, from opposite sides: a
// resolver must reach the same result either way, whatever the arrival
// order, or the replicas drift apart silently. Every resolver here decides
// from what both directions see identically: ownership by system name
// (never "source" or "target"), times compared as instants with ties
// dead-lettered, merges computed by commutative formulas ((source + target)
// - base, not target + (source - base), which differs in float64 rounding),
// results sorted.
//
// # Testing a resolver
//
// Package [github.com/duplexsync/duplex/resolve/resolvetest] is the
// conformance kit every resolver here passes, and custom resolvers can
// run: random interleavings of edits on two replicas with random
// deliveries in both directions, checking that the replicas agree or the
// DLQ names the key, that the delivery order does not change the result,
// that the same input always gets the same decisions, and that a resolver
// never modifies its input, decides undeclared fields or panics on odd
// values.
package resolve
