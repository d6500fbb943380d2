package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/duplexsync/duplex"
)

// Status is where an entry stands.
type Status string

// Entry statuses.
const (
	// StatusPending: waiting for someone to act. Only pending entries count
	// in Depth and PendingForKey.
	StatusPending Status = "pending"
	// StatusRetried: sent back through the Pipeline. If it fails again, its
	// Put makes it pending again.
	StatusRetried Status = "retried"
	// StatusDismissed: dropped on purpose; the entry is kept.
	StatusDismissed Status = "dismissed"
	// StatusResolved: fixed, by hand or by choosing a winner.
	StatusResolved Status = "resolved"
)

// Valid reports whether s is one of the defined statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusRetried, StatusDismissed, StatusResolved:
		return true
	}
	return false
}

// ParseStatus returns the status named s.
func ParseStatus(s string) (Status, error) {
	if st := Status(s); st.Valid() {
		return st, nil
	}
	return "", fmt.Errorf("dlq: unknown status %q", s)
}

// Entry is one dead-lettered change and its history in the queue.
type Entry struct {
	// ID identifies the entry in the store; IDs increase in the order
	// entries are created.
	ID int64 `json:"id"`
	// DeadLetter is the change and why it could not be applied, as of its
	// last Put (At is then that Put's time, the same as LastSeen).
	duplex.DeadLetter
	// FirstSeen and LastSeen are the times of the first and last Put (the
	// dead letter's At, or the store's clock when At is zero).
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Count is how many times the entry was put: the change again (a
	// replay, a retry that failed), or, for a row held by a two-way merge
	// (see RowIdentity), every later change of that row.
	Count int `json:"count"`
	// History holds the versions this entry superseded (a held row's
	// earlier versions), oldest first, at most HistoryLimit of them: the
	// oldest are dropped first. Count tells how many there were in all.
	History []Version `json:"history,omitempty"`
	// Status is where the entry stands.
	Status Status `json:"status"`
	// ResolvedBy and Resolution record the last SetStatus: who acted (an
	// operator, "auto") and how ("winner=a", "dismissed", "retry"). A later
	// Put that reopens the entry keeps them, as history.
	ResolvedBy string `json:"resolved_by,omitempty"`
	Resolution string `json:"resolution,omitempty"`
	// UpdatedAt is when the store last changed the entry (Put or SetStatus),
	// by the store's clock.
	UpdatedAt time.Time `json:"updated_at"`
}

// Key returns the entry's row key in its canonical form
// (duplex.Key.String), as Filter.Key and PendingForKey take it.
func (e *Entry) Key() string { return e.Change.Key.String() }

// DefaultLimit is the page size List uses when Filter.Limit is zero.
const DefaultLimit = 100

// Filter selects entries for List. Zero fields match everything.
type Filter struct {
	// Sync matches DeadLetter.Sync.
	Sync string `json:"sync,omitempty"`
	// Direction matches the direction's String form ("a_to_b").
	Direction string `json:"direction,omitempty"`
	// Table matches the change's table ("public.customers").
	Table string `json:"table,omitempty"`
	// Reason matches the dead-letter reason.
	Reason duplex.Reason `json:"reason,omitempty"`
	// Status matches the entry's status.
	Status Status `json:"status,omitempty"`
	// Key matches the change's key in its canonical form (duplex.Key.String,
	// such as `id=42`).
	Key string `json:"key,omitempty"`
	// Field matches entries whose conflict holds this field
	// (ConflictInfo.Fields).
	Field string `json:"field,omitempty"`
	// Before matches entries first seen before this time (older than an
	// age). Zero: any.
	Before time.Time `json:"before,omitzero"`
	// OldestFirst lists entries by ascending ID instead of the default
	// newest first (descending ID).
	OldestFirst bool `json:"oldest_first,omitempty"`
	// Limit is the most entries returned. 0: DefaultLimit.
	Limit int `json:"limit,omitempty"`
	// Offset skips that many matching entries (after applying After).
	Offset int `json:"offset,omitempty"`
	// After is a keyset cursor: when not zero, only entries that come after
	// the entry with this ID in the listing order are returned (IDs below it
	// newest first, above it oldest first). Pass the last ID of a page to
	// get the next page; unlike Offset it does not skip or repeat entries
	// when new ones arrive.
	After int64 `json:"after,omitempty"`
}

// Match reports whether e meets the filter's conditions (Limit, Offset and
// After aside).
func (f *Filter) Match(e *Entry) bool {
	return (f.Sync == "" || e.Sync == f.Sync) &&
		(f.Direction == "" || e.Direction.String() == f.Direction) &&
		(f.Table == "" || e.Change.Table.String() == f.Table) &&
		(f.Reason == "" || e.Reason == f.Reason) &&
		(f.Status == "" || e.Status == f.Status) &&
		(f.Key == "" || e.Change.Key.String() == f.Key) &&
		(f.Field == "" || e.Conflict != nil && slices.Contains(e.Conflict.Fields, f.Field)) &&
		(f.Before.IsZero() || e.FirstSeen.Before(f.Before))
}

// DepthRow counts the pending entries of one sync, direction, table and
// reason, for metrics.
type DepthRow struct {
	Sync      string `json:"sync"`
	Direction string `json:"direction"` // Direction.String(): "a_to_b"
	Table     string `json:"table"`     // "public.customers"
	Reason    string `json:"reason"`
	Count     int    `json:"count"`
	// Oldest is the earliest FirstSeen of the group's entries.
	Oldest time.Time `json:"oldest"`
}

// Store is the admin side of a dead-letter queue. Implementations are safe
// for concurrent use, and every method returns ctx.Err() (possibly wrapped)
// when ctx is done before it could answer.
type Store interface {
	// List returns one page of the entries matching f, newest (highest ID)
	// first unless f.OldestFirst, and the total number of entries matching
	// f's conditions regardless of Limit, Offset and After.
	List(ctx context.Context, f Filter) ([]Entry, int, error)
	// Get returns the entry with id, or an error matching ErrNotFound that
	// names the id.
	Get(ctx context.Context, id int64) (Entry, error)
	// SetStatus moves entry id to status to, recording by and resolution,
	// if its status is one of from (any status when from is empty), and
	// returns the updated entry. If the entry is already in to it returns
	// it unchanged, so an action repeated is not an error. Otherwise it
	// returns a *TransitionError (matching ErrTransition) naming the id and
	// the statuses, or an error matching ErrNotFound.
	SetStatus(ctx context.Context, id int64, from []Status, to Status, by, resolution string) (Entry, error)
	// Depth counts the pending entries by sync, direction, table and reason,
	// sorted by those fields. Groups with no pending entry are left out.
	Depth(ctx context.Context) ([]DepthRow, error)
	// PendingForKey returns the pending entries of one row (key in its
	// canonical form, duplex.Key.String), oldest first (by FirstSeen, then
	// ID), so the changes to a row can be replayed in their order.
	PendingForKey(ctx context.Context, direction duplex.Direction, table duplex.Table, key string) ([]Entry, error)
}

// Sentinel errors; match them with errors.Is.
var (
	// ErrNotFound: there is no entry with the requested ID.
	ErrNotFound = errors.New("dlq: entry not found")
	// ErrTransition: the entry's status is not one SetStatus may move from.
	ErrTransition = errors.New("dlq: illegal status transition")
)

// NotFoundError reports a missing entry. It matches ErrNotFound.
type NotFoundError struct {
	ID int64
}

// Error names the missing entry.
func (e *NotFoundError) Error() string {
	return "dlq: entry " + strconv.FormatInt(e.ID, 10) + " not found"
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// TransitionError reports a SetStatus whose entry was in a status it may
// not move from (someone else acted first, or the action does not apply).
// It matches ErrTransition.
type TransitionError struct {
	ID     int64
	Status Status   // the entry's status
	From   []Status // the statuses the caller allowed
	To     Status
}

// Error names the entry, its status and the transition refused.
func (e *TransitionError) Error() string {
	from := make([]string, len(e.From))
	for i, s := range e.From {
		from[i] = string(s)
	}
	return fmt.Sprintf("dlq: entry %d is %s, not %s: cannot set it %s", e.ID, e.Status, strings.Join(from, " or "), e.To)
}

// Is makes errors.Is(err, ErrTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrTransition }

// CheckTransition validates the statuses of a SetStatus call: to and every
// status in from must be defined. Store implementations call it first, so
// they all reject the same calls.
func CheckTransition(from []Status, to Status) error {
	if !to.Valid() {
		return fmt.Errorf("dlq: cannot set unknown status %q", to)
	}
	for _, s := range from {
		if !s.Valid() {
			return fmt.Errorf("dlq: cannot move from unknown status %q", s)
		}
	}
	return nil
}
