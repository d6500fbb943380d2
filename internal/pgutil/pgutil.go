// Package pgutil holds what duplex's PostgreSQL packages share: the
// classification of PostgreSQL and pgx errors into duplex error classes
// ([Classify]) and identifier quoting ([QuoteIdent], [QuoteTable]).
package pgutil

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/duplexsync/duplex"
)

// Classify marks err with the duplex error class its cause calls for, so the
// Pipeline knows whether to wait, retry or dead-letter:
//
//   - duplex.Unavailable, the endpoint is down (wait as long as it takes):
//     SQLSTATE class 08 (connection exception), 57P01 admin_shutdown,
//     57P02 crash_shutdown, 57P03 cannot_connect_now, 53300
//     too_many_connections, and driver errors that never reached the server
//     or lost the connection (pgconn.SafeToRetry, pgconn.Timeout, net.Error,
//     io.EOF, io.ErrUnexpectedEOF, *pgconn.ConnectError).
//   - duplex.Transient, worth a bounded retry: 40001 serialization_failure,
//     40P01 deadlock_detected, 55P03 lock_not_available, 53200
//     out_of_memory, 53400 configuration_limit_exceeded.
//   - duplex.Permanent, fails every time: SQLSTATE classes 22 (data
//     exception), 23 (integrity constraint violation), 42 (syntax error or
//     access rule violation) and 44 (WITH CHECK OPTION violation).
//
// Any other error is returned unchanged (duplex.ClassUnknown: retried, then
// dead-lettered), and so are nil, errors that already carry a class, and
// context cancellation and deadlines (which duplex.ClassOf treats as
// unavailable, so they are never dead-lettered). The result wraps err:
// errors.As still finds the *pgconn.PgError.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var c duplex.Classifier
	if errors.As(err, &c) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		// Whatever the server said while refusing the connection (a
		// database not accepting connections is 55000), it is unreachable.
		return duplex.Unavailable(err)
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch ClassOfCode(pgErr.Code) {
		case duplex.ClassUnavailable:
			return duplex.Unavailable(err)
		case duplex.ClassTransient:
			return duplex.Transient(err)
		case duplex.ClassPermanent:
			return duplex.Permanent(err)
		}
		return err
	}
	if connectionLost(err) {
		return duplex.Unavailable(err)
	}
	return err
}

// ClassOfCode returns the class of a SQLSTATE code, as Classify applies it;
// ClassUnknown for codes it leaves alone.
func ClassOfCode(code string) duplex.ErrorClass {
	switch code {
	case "57P01", "57P02", "57P03", "53300":
		return duplex.ClassUnavailable
	case "40001", "40P01", "55P03", "53200", "53400":
		return duplex.ClassTransient
	}
	if len(code) != 5 {
		return duplex.ClassUnknown
	}
	switch code[:2] {
	case "08":
		return duplex.ClassUnavailable
	case "22", "23", "42", "44":
		return duplex.ClassPermanent
	}
	return duplex.ClassUnknown
}

// connectionLost reports driver errors that mean the server could not be
// reached or the connection broke.
func connectionLost(err error) bool {
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	return false
}

// SQLState returns the SQLSTATE code of the *pgconn.PgError in err's chain,
// or "" when there is none.
func SQLState(err error) string {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code
	}
	return ""
}

// QuoteIdent quotes an identifier for SQL: "name", with embedded double
// quotes doubled. NUL bytes, which no identifier may contain, are removed.
func QuoteIdent(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// QuoteTable quotes a table name for SQL: "schema"."name", or "name" when
// the schema is empty (resolved through the search_path).
func QuoteTable(t duplex.Table) string {
	if t.Schema == "" {
		return QuoteIdent(t.Name)
	}
	return QuoteIdent(t.Schema) + "." + QuoteIdent(t.Name)
}
