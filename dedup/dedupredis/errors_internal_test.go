package dedupredis

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// serverError returns an error of the type go-redis uses for error replies
// (an internal string type, reached through one of its exported values).
func serverError(msg string) error {
	v := reflect.New(reflect.TypeOf(redis.ErrCrossSlot)).Elem()
	v.SetString(msg)
	return v.Interface().(error)
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want duplex.ErrorClass
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}, duplex.ClassUnavailable},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, duplex.ClassUnavailable},
		{syscall.ECONNRESET, duplex.ClassUnavailable},
		{io.EOF, duplex.ClassUnavailable},
		{redis.ErrPoolTimeout, duplex.ClassUnavailable},
		{serverError("LOADING Redis is loading the dataset in memory"), duplex.ClassUnavailable},
		{serverError("READONLY You can't write against a read only replica."), duplex.ClassUnavailable},
		{serverError("MASTERDOWN Link with MASTER is down"), duplex.ClassUnavailable},
		{serverError("CLUSTERDOWN The cluster is down"), duplex.ClassUnavailable},
		{serverError("ERR max number of clients reached"), duplex.ClassUnavailable},
		{serverError("NOAUTH Authentication required."), duplex.ClassPermanent},
		{serverError("WRONGPASS invalid username-password pair"), duplex.ClassPermanent},
		{serverError("NOPERM this user has no permissions to run the 'set' command"), duplex.ClassPermanent},
		{serverError("WRONGTYPE Operation against a key holding the wrong kind of value"), duplex.ClassPermanent},
		{redis.ErrClosed, duplex.ClassPermanent},
		{serverError("OOM command not allowed when used memory > 'maxmemory'."), duplex.ClassTransient},
		{errors.New("something else"), duplex.ClassTransient},
		{context.Canceled, duplex.ClassUnavailable},         // by duplex.ClassOf
		{context.DeadlineExceeded, duplex.ClassUnavailable}, // by duplex.ClassOf
	} {
		err := classify("dedupredis: test", tt.err)
		require.Equal(t, tt.want, duplex.ClassOf(err), "%v", tt.err)
		require.ErrorIs(t, err, tt.err)
		require.ErrorContains(t, err, "dedupredis: test: ")
	}
}
