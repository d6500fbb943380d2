// Package dlqtest is the conformance suite every dead-letter queue must
// pass: [dlq.Memory], the PostgreSQL one, and third-party implementations
// of [duplex.DeadLetterSink] and [dlq.Store].
//
//	func TestConformance(t *testing.T) {
//		t.Parallel()
//		dlqtest.Run(t, func(t *testing.T) dlqtest.Sink {
//			return dlqpg.New(testenv.Postgres(t), dlqpg.Config{Schema: "duplex"})
//		})
//	}
//
// Each subtest runs in parallel with a fresh, empty queue from the NewFunc.
//
// Payloads must round-trip: every value of a change's Key, Before and
// After and of a conflict's Source and Target comes back equal under
// [duplex.Equal] (so an int may come back as an int64), nested maps and
// slices included, nil values stay present, nil maps stay nil, and times
// keep their instant to the microsecond.
package dlqtest
