// Package resolvetest is the conformance kit for [duplex.Resolver]s: the
// checks every resolver of package resolve passes, for custom resolvers to
// pass too.
//
//	func TestMyResolver(t *testing.T) {
//		resolvetest.Run(t, resolvetest.Config{
//			NewResolver: func() duplex.Resolver { return myResolver },
//			Decides:     []string{"note"},
//		})
//	}
//
// # Checks
//
// [Run] runs [Check] and [CheckOddInput]. Both drive the resolver the way
// a two-way sync does: two in-memory replicas ([Pair]) of a table, random
// user edits on both sides, deliveries in either direction at random
// points, merges that ask the resolver. Every call is watched: a resolver
// must not modify its input (compared deeply before and after), must
// decide only the fields it declares (Config.Decides), and must never
// panic, whatever the values. Check adds that the replicas end equal or a
// dead letter names the key, that the same edits get the same decisions
// (determinism), and that the delivery order does not change the result
// (both directions decide a conflict alike). Failures are shrunk by rapid
// to a short run and reported with its edits, the resolver's decisions and
// both replicas' rows.
//
// # Scenarios
//
// For hand-written cases, [BothWays] plays a [Scenario] of edits with each
// side's changes going out first and checks that both runs agree; a
// [Pair] plays edits and deliveries step by step.
//
// # Data
//
// [Config].Table describes the table the replicas hold and how users
// write each column ([Draw]; [OneOf], [Subsets], [Int64Counter],
// [Float64Counter], [Odd]); the default is [Items]. Sides names the two
// systems the way the resolver knows them, Times makes the replicas report
// row commit times for resolvers that compare them, and Stamp names an
// updated_at-like column every edit sets.
package resolvetest
