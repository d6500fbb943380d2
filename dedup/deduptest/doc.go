// Package deduptest is the conformance suite every [duplex.Deduper] must
// pass: the in-memory one, and those backed by PostgreSQL and Redis, as well
// as third-party implementations.
//
// An implementation's test calls [Run] with the [Features] it has and a
// [NewFunc] that builds an instance for a namespace:
//
//	func TestConformance(t *testing.T) {
//		t.Parallel()
//		deduptest.Run(t, deduptest.Features{Persistent: true, Expires: true, TTL: time.Second},
//			func(t *testing.T, ns string) duplex.Deduper {
//				return dedupredis.New(testenv.Redis(t), dedupredis.Config{Prefix: ns, TTL: time.Second})
//			})
//	}
//
// The suite's subtests run in parallel with each other. Each uses its own
// namespaces and random ids, so leftovers of an earlier run in a persistent
// backend do not disturb it; the NewFunc should still scope the backend's
// state to the namespace and clean up after the test.
package deduptest
