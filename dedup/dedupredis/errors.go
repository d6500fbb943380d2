package dedupredis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/duplexsync/duplex"
)

// classify wraps err with what and marks it with its duplex.ErrorClass:
// unreachable Redis is Unavailable, errors that will repeat are Permanent,
// the rest Transient. Context errors keep their identity (duplex.ClassOf
// reports them as unavailable).
func classify(what string, err error) error {
	err = fmt.Errorf("%s: %w", what, err)
	switch classOf(err) {
	case duplex.ClassUnavailable:
		return duplex.Unavailable(err)
	case duplex.ClassPermanent:
		return duplex.Permanent(err)
	case duplex.ClassUnknown:
		return err
	}
	return duplex.Transient(err)
}

func classOf(err error) duplex.ErrorClass {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return duplex.ClassUnknown
	}
	if errors.Is(err, redis.ErrClosed) {
		// The client was closed by its owner: retrying cannot help.
		return duplex.ClassPermanent
	}
	var netErr net.Error
	switch {
	case errors.As(err, &netErr), // dial errors, i/o timeouts
		errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, net.ErrClosed):
		return duplex.ClassUnavailable
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		switch {
		case redis.IsLoadingError(err), redis.IsMasterDownError(err), redis.IsClusterDownError(err),
			redis.IsTryAgainError(err), redis.IsReadOnlyError(err), redis.IsMaxClientsError(err):
			return duplex.ClassUnavailable
		case redis.IsAuthError(err), redis.IsPermissionError(err),
			strings.HasPrefix(rerr.Error(), "WRONGTYPE "):
			return duplex.ClassPermanent
		}
	}
	return duplex.ClassTransient
}
