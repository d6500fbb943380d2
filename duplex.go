// The interfaces a user implements or plugs in: ChangeSource, Resolver, Deduper,
// DeadLetterSink, Applier and its optional capabilities, LoopGuard; and the DeadLetter.

package duplex

import (
	"context"
	"time"
)

// ChangeSource captures committed changes on one system.
//
// Stream blocks, calling fn with batches of changes in commit order, starting
// after from (or, when from is "", after the position the source itself last
// stored as acknowledged; a source that cannot go back before its stored
// position, like a replication slot, starts at the later of the two). It calls fn from one goroutine at a time. It
// returns nil when ctx is canceled, fn's error when fn fails, and any other
// error only when it cannot go on (a dropped slot, a bad configuration);
// connection losses are handled inside by reconnecting and resuming.
//
// Delivery is at-least-once: everything after the last acknowledged position
// may be delivered again after a restart or reconnect, with the same change
// IDs. The Pipeline owns each batch once fn is called: the source must not
// modify the slice or the changes afterwards.
//
// Ack(p) promises that the change carrying p and every change delivered
// before it are settled (applied, dead-lettered, or known duplicates or
// echoes). The source then stores the furthest resume point that skips no
// unsettled change, at its own pace; Ack must be cheap and safe to call
// concurrently with Stream. A source never acknowledges past a change the
// Pipeline has not settled.
type ChangeSource interface {
	Stream(ctx context.Context, from Position, fn func(ctx context.Context, batch []Change) error) error
	Ack(ctx context.Context, p Position) error
}

// Resolver decides the fields of a change against the target's current row.
//
// The Pipeline calls Resolve for every change that would modify the target,
// with the fields at stake already classified (see Conflict). Resolve decides
// fields with c.Take, c.Keep or c.Set, or sends the whole change to the DLQ
// with c.DeadLetter; fields it leaves undecided go to the next resolver of a
// Chain. A Resolver must be deterministic: the same conflict seen from
// either direction must reach the same result, whatever the arrival order.
// An error is treated like an apply error for that change (see ErrorClass).
type Resolver interface {
	Resolve(ctx context.Context, c *Conflict) error
}

// ResolverFunc adapts a function to the Resolver interface.
type ResolverFunc func(ctx context.Context, c *Conflict) error

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, c *Conflict) error { return f(ctx, c) }

// Chain returns a Resolver that asks each resolver in turn, until the change
// is dead-lettered. Each decides only what is still undecided (and may
// revisit converged fields, see Conflict.Converged).
func Chain(rs ...Resolver) Resolver {
	return ResolverFunc(func(ctx context.Context, c *Conflict) error {
		for _, r := range rs {
			if c.DeadLettered() != "" {
				return nil
			}
			if err := r.Resolve(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
}

// Deduper remembers which change IDs have been settled on a target.
//
// Seen reports, for each id, whether it was marked; it never marks. Mark
// records ids as settled; the Pipeline calls it only after the changes were
// applied (committed), dead-lettered or found to be no-ops, so a failure
// between claiming and applying can never lose a change. Both must be safe
// for concurrent use; marking an id twice is not an error. An error from
// Seen makes the Pipeline treat the ids as unseen (the apply is idempotent
// in effect); an error from Mark is logged and counted.
type Deduper interface {
	Seen(ctx context.Context, ids []string) ([]bool, error)
	Mark(ctx context.Context, ids []string) error
}

// DeadLetterSink receives the changes the Pipeline cannot apply: conflicts
// nobody won, permanent errors, exhausted retries. Put must be durable when
// it returns nil; the Pipeline acknowledges the change to its source
// afterwards. Putting the same change twice (after a crash) should update
// the existing entry rather than add a second. An error marked Unavailable
// or Transient is retried; any other error stops the Pipeline, since the
// change could then be neither applied nor kept.
type DeadLetterSink interface {
	Put(ctx context.Context, l *DeadLetter) error
}

// Applier reads and writes the target system.
//
// Lookup returns the current rows for keys of one table, in the order of
// keys, with nil for keys that have no row. It reads committed data. A row
// may carry the time it was last committed under CommitTimeField (a
// time.Time); the Pipeline removes it and passes it to resolvers as
// Conflict.TargetTime. The Pipeline owns the returned rows.
//
// Apply writes a batch atomically: all writes or none. Writes must be
// applied in order (a key may appear more than once). An Applier should check
// each write's expectation (see Write) and fail the batch with ErrStale when
// it no longer holds, so a user's edit made between Lookup and Apply is
// never overwritten. Errors should be classified (Transient, Unavailable,
// Permanent), and a *BatchError should name the failing write when known.
// Apply must be safe to repeat: the Pipeline may re-send writes after an
// error whose outcome it cannot know. Apply must not keep b after it returns.
// An Applier must be safe for concurrent use: a Pipeline reads the rows of
// its next chunk (Lookup, and its Ledger and records) while the Apply of
// the chunk before commits, and the two directions of a Sync share each
// system's Applier.
type Applier interface {
	Lookup(ctx context.Context, table Table, keys []Key) ([]Values, error)
	Apply(ctx context.Context, b *Batch) error
}

// VisibilityWaiter is implemented by a ChangeSource that may deliver a
// change a moment before a new read of its system sees it (PostgreSQL's
// walsender sends a commit once its WAL is flushed, just before the
// transaction becomes visible to other sessions). A two-way Pipeline reads
// the source's current rows, so it first calls WaitVisible with the
// positions of the changes it is about to merge.
type VisibilityWaiter interface {
	WaitVisible(ctx context.Context, positions []Position) error
}

// CommitTimeField is the field under which Applier.Lookup may report a row's
// last commit time, for last-write-wins on commit timestamps.
const CommitTimeField = "_duplex_commit_time"

// Batch is what one Apply call writes.
type Batch struct {
	// Writes are applied in order, in one transaction.
	Writes []Write
	// Source names the system the changes come from.
	Source string
	// Agreements are the agreement records of a two-way merge, written in
	// the same transaction as Writes by an AgreementKeeper.
	Agreements []AgreementWrite
	// Checkpoint, when not empty, is a position of Source that is safe to
	// resume after once this batch commits: every change delivered up to it
	// is then settled. An Applier that implements Checkpointer records it in
	// the same transaction.
	Checkpoint Position
}

// Write is one row write decided by the Pipeline.
type Write struct {
	// Op is OpInsert (create the row from Set, which holds every column the
	// source sent, key included; the row must not exist), OpUpdate (set the
	// fields in Set on the existing row) or OpDelete.
	Op Op
	// Table and Key identify the row.
	Table Table
	Key   Key
	// Set holds the fields to write. Fields not in Set are never touched.
	Set Values
	// Expect holds the target values the decision was based on, for the
	// fields the write changes (OpUpdate) or the whole row (OpDelete). If the
	// row no longer holds them, or no longer exists for OpUpdate, or exists
	// for OpInsert, the Applier returns ErrStale. Nil means no expectation.
	Expect Values
	// Change is the change being applied: its ID (for a transactional dedup
	// record), Source, Position and CommitTime. A two-way merge's write back
	// to the source system carries a copy of the triggering change with an
	// empty ID: there is nothing to record.
	Change *Change
}

// Checkpointer is implemented by Appliers that record Batch.Checkpoint in
// the same transaction as the writes (exactly-once progress). The Pipeline
// asks it where to resume at start and passes that to ChangeSource.Stream.
type Checkpointer interface {
	// Checkpoint returns the position of the last change from source applied
	// through this Applier, or "" when there is none.
	Checkpoint(ctx context.Context, source string) (Position, error)
}

// Truncater is implemented by Appliers that can empty a table, for
// Options.PropagateTruncate. Truncate must record c.ID in its Ledger (if it
// keeps one) in the same transaction, so that a replay after a crash never
// truncates again what was written since.
type Truncater interface {
	Truncate(ctx context.Context, table Table, c *Change) error
}

// Ledger is implemented by Appliers that record the ID of every change they
// write in the same transaction as the write (a dedup table in the target).
// Applied must never answer "not applied" while a commit of that change may
// still be in progress (after a lost connection, wait until the server has
// ended that session).
// It is the truth about what was applied: the Pipeline asks it about the
// changes its Deduper has not seen (so a replay after a crash is recognised
// even when the Deduper forgot), and, after an apply error whose outcome is
// unknown (the connection dropped during COMMIT), whether the batch
// committed, so that no change is applied twice.
type Ledger interface {
	// Applied reports, for each id, whether a write of that change committed.
	Applied(ctx context.Context, ids []string) ([]bool, error)
}

// LoopGuard recognises changes the sync itself made, which must not be
// propagated back. Echo is called for each incoming change before anything
// else; true drops the change (it is settled, not applied).
type LoopGuard interface {
	Echo(ctx context.Context, c *Change) (bool, error)
}

// Reason says why a change was dead-lettered.
type Reason string

// Dead-letter reasons.
const (
	ReasonConflict         Reason = "conflict"
	ReasonPermanentError   Reason = "permanent_error"
	ReasonRetriesExhausted Reason = "retries_exhausted"
	ReasonTruncate         Reason = "truncate"
	ReasonInvalid          Reason = "invalid"
)

// DeadLetter is a change the Pipeline could not apply, with everything an
// operator needs to decide what to do.
type DeadLetter struct {
	// Sync names the sync (Config.Name).
	Sync string `json:"sync"`
	// Direction is the flow the change was travelling.
	Direction Direction `json:"direction"`
	// Change is the full change (the payload).
	Change Change `json:"change"`
	// Reason is why it was dead-lettered.
	Reason Reason `json:"reason"`
	// Error is the error text or the resolver's explanation.
	Error string `json:"error"`
	// Attempts is how many times the apply was tried.
	Attempts int `json:"attempts"`
	// Conflict is set for conflicts: the kind, the contested fields and the
	// target's row at the time.
	Conflict *ConflictInfo `json:"conflict,omitempty"`
	// At is when the Pipeline dead-lettered it.
	At time.Time `json:"at"`
}

// ConflictInfo records a conflict in a DeadLetter: both versions and the
// contested fields.
type ConflictInfo struct {
	Kind   ConflictKind `json:"kind"`
	Fields []string     `json:"fields"`
	// Source is the incoming version (the change's after image, or nil for a
	// delete); Target is the target's row when it was read.
	Source Values `json:"source"`
	Target Values `json:"target"`
	// DecidedBy names the resolver that sent it to the DLQ.
	DecidedBy string `json:"decided_by,omitempty"`
	// Base is the row both sides last agreed on (the base of a two-way
	// merge, or the change's before image one way); nil when unknown or
	// the row did not exist.
	Base Values `json:"base,omitempty"`
	// Merge says a two-way merge held the row: Source and Target are the
	// two systems' current rows as the merge read them, not a change's
	// images, so a later merge of the same row supersedes them (the DLQ
	// keeps one pending entry per held row and field set).
	Merge bool `json:"merge,omitempty"`
	// Unique describes a unique collision (Kind UniqueCollision): Source
	// is the incoming row, Target the target's row holding the values.
	Unique *UniqueInfo `json:"unique,omitempty"`
}
