// Observer: the events the engine reports for metrics, and NopObserver to embed.

package duplex

import (
	"context"
	"time"
)

// Observer receives the Pipeline's events, for metrics and tracing. Methods
// are called synchronously from the Pipeline's goroutines and must be quick
// and safe for concurrent use. Implementations embed NopObserver so that
// events added later do not break them.
type Observer interface {
	Applied(ctx context.Context, e AppliedEvent)
	Skipped(ctx context.Context, e SkippedEvent)
	Retried(ctx context.Context, e RetriedEvent)
	Conflicted(ctx context.Context, e ConflictEvent)
	DeadLettered(ctx context.Context, e DeadLetterEvent)
	Acked(ctx context.Context, e AckEvent)
	DedupFailed(ctx context.Context, e DedupFailedEvent)
	Drifted(ctx context.Context, e DriftEvent)
}

// AppliedEvent reports changes of one table committed in one batch.
type AppliedEvent struct {
	Direction Direction
	Table     Table
	// Count is the number of changes written.
	Count int
	// Lags holds, per change, the time from its source commit to the target
	// commit (changes without a commit time are left out). The slice is
	// reused after the call returns.
	Lags []time.Duration
}

// SkipReason says why a change needed no write.
type SkipReason string

// Reasons a change is settled without a write.
const (
	SkipEcho      SkipReason = "echo"      // made by the sync itself
	SkipDuplicate SkipReason = "duplicate" // already settled (dedup)
	SkipNoop      SkipReason = "noop"      // the target already holds it, or resolvers kept the target
)

// SkippedEvent reports changes settled without a write.
type SkippedEvent struct {
	Direction Direction
	Table     Table
	Reason    SkipReason
	Count     int
}

// RetriedEvent reports a failed attempt that will be retried.
type RetriedEvent struct {
	Direction Direction
	// Changes is how many changes the failed attempt covered.
	Changes int
	Attempt int
	Class   ErrorClass
	Err     error
	Backoff time.Duration
}

// ConflictEvent reports a change with contested fields and how it ended.
type ConflictEvent struct {
	Direction Direction
	Table     Table
	Kind      ConflictKind
	// Resolution is OutcomeApplied, OutcomeKeptTarget, OutcomeMerged or
	// OutcomeDeadLettered.
	Resolution Outcome
}

// DeadLetterEvent reports a change sent to the DLQ.
type DeadLetterEvent struct {
	Direction Direction
	Table     Table
	Reason    Reason
}

// AckEvent reports a position acknowledged to the source.
type AckEvent struct {
	Direction Direction
	Position  Position
}

// DedupFailedEvent reports a Deduper error; the Pipeline carries on without it.
type DedupFailedEvent struct {
	Direction Direction
	Op        string // "seen" or "mark"
	Err       error
}

// DriftEvent reports, once per table and field, a schema difference between
// the two sides: a field the source sends that the target does not have (it
// is ignored), or, with SourceLost, a field the target has that the source no
// longer sends (the target keeps its values; nothing updates them).
type DriftEvent struct {
	Direction  Direction
	Table      Table
	Field      string
	SourceLost bool
}

// NopObserver ignores every event. Embed it in Observer implementations.
type NopObserver struct{}

// Applied does nothing.
func (NopObserver) Applied(context.Context, AppliedEvent) {}

// Skipped does nothing.
func (NopObserver) Skipped(context.Context, SkippedEvent) {}

// Retried does nothing.
func (NopObserver) Retried(context.Context, RetriedEvent) {}

// Conflicted does nothing.
func (NopObserver) Conflicted(context.Context, ConflictEvent) {}

// DeadLettered does nothing.
func (NopObserver) DeadLettered(context.Context, DeadLetterEvent) {}

// Acked does nothing.
func (NopObserver) Acked(context.Context, AckEvent) {}

// DedupFailed does nothing.
func (NopObserver) DedupFailed(context.Context, DedupFailedEvent) {}

// Drifted does nothing.
func (NopObserver) Drifted(context.Context, DriftEvent) {}

var _ Observer = NopObserver{}
