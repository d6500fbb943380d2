// Errors: sentinels, classes by behaviour (Transient, Unavailable, Permanent), and the
// typed errors the engine returns.

package duplex

import (
	"context"
	"errors"
	"fmt"
)

// errStopped is the cancel cause Run uses for a requested stop, so a stop
// can be told apart from a failure.
var errStopped = errors.New("duplex: stopped")

// Sentinel errors.
var (
	// ErrStale is returned by an Applier when a write's expectation
	// (Write.Expect) no longer holds because the target row changed after the
	// Pipeline read it. The Pipeline re-reads the row and decides again.
	ErrStale = errors.New("duplex: target row changed since it was read")
	// ErrAlreadyRunning is returned by Run when it is called a second time.
	ErrAlreadyRunning = errors.New("duplex: Run called twice")
)

// ErrorClass says how the Pipeline treats an error.
type ErrorClass uint8

// Error classes, from the least to the most severe for a single change.
const (
	// ClassUnknown errors are retried with backoff up to
	// Config.MaxAttempts, then dead-lettered with their text.
	ClassUnknown ErrorClass = iota
	// ClassTransient errors (serialization failure, deadlock, lock timeout)
	// are retried with backoff for as long as they last, holding back the
	// change's key (other keys go on); they are never dead-lettered.
	ClassTransient
	// ClassUnavailable errors say the endpoint itself is down (connection
	// refused or lost). They are not the change's fault: the Pipeline waits
	// and retries for as long as it takes, holding back the stream, and never
	// dead-letters a change because of them.
	ClassUnavailable
	// ClassPermanent errors (constraint, type, permission) will fail every
	// time; the change goes to the DLQ at once.
	ClassPermanent
)

// String returns the class name.
func (c ErrorClass) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassUnavailable:
		return "unavailable"
	case ClassPermanent:
		return "permanent"
	}
	return "unknown"
}

type classified struct {
	err   error
	class ErrorClass
}

func (e *classified) Error() string { return e.err.Error() }
func (e *classified) Unwrap() error { return e.err }

// ErrorClass lets errors.As find the class through wrapping.
func (e *classified) ErrorClass() ErrorClass { return e.class }

// Classifier is implemented by errors that know their own class. Drivers'
// errors are classified by the packages that know them (internal/pgutil);
// user code marks its own with Transient, Unavailable and Permanent.
type Classifier interface {
	ErrorClass() ErrorClass
}

// Transient marks err as worth retrying: it is retried with backoff for as
// long as it lasts, never dead-lettered. Transient(nil) is nil.
func Transient(err error) error { return classify(err, ClassTransient) }

// Unavailable marks err as an outage of the endpoint rather than a fault of
// the change: the Pipeline retries until the endpoint is back and never
// dead-letters because of it. Unavailable(nil) is nil.
func Unavailable(err error) error { return classify(err, ClassUnavailable) }

// Permanent marks err as one that will never succeed: the change goes to the
// DLQ at once. Permanent(nil) is nil.
func Permanent(err error) error { return classify(err, ClassPermanent) }

func classify(err error, c ErrorClass) error {
	if err == nil {
		return nil
	}
	return &classified{err: err, class: c}
}

// ClassOf returns the class of err: the outermost Classifier in its chain,
// else ClassUnknown. Context cancellation is reported as ClassUnavailable so
// it is never dead-lettered.
func ClassOf(err error) ErrorClass {
	if err == nil {
		return ClassUnknown
	}
	var c Classifier
	if errors.As(err, &c) {
		return c.ErrorClass()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return ClassUnavailable
	}
	return ClassUnknown
}

// IsTransient reports whether err is marked transient.
func IsTransient(err error) bool { return ClassOf(err) == ClassTransient }

// IsUnavailable reports whether err is marked as an endpoint outage.
func IsUnavailable(err error) bool { return ClassOf(err) == ClassUnavailable }

// IsPermanent reports whether err is marked permanent.
func IsPermanent(err error) bool { return ClassOf(err) == ClassPermanent }

// BatchError is returned by an Applier that knows which write of a batch
// failed; the Pipeline then isolates that write without bisecting. Use it
// only for errors that write caused (a constraint, a stale expectation):
// the Pipeline does not ask the Ledger whether a batch failing with a
// BatchError committed, so wrapping a connection error in one could apply
// a change twice.
type BatchError struct {
	Index int   // index of the failing write in the batch
	Err   error // the cause, classified as usual
}

// Error implements error.
func (e *BatchError) Error() string { return fmt.Sprintf("write %d: %v", e.Index, e.Err) }

// Unwrap returns the cause.
func (e *BatchError) Unwrap() error { return e.Err }

// ConfigError reports an invalid configuration value; Field names it.
type ConfigError struct {
	Field  string
	Reason string
}

// Error implements error.
func (e *ConfigError) Error() string { return "duplex: " + e.Field + ": " + e.Reason }

// ErrorClass makes configuration errors permanent.
func (e *ConfigError) ErrorClass() ErrorClass { return ClassPermanent }
