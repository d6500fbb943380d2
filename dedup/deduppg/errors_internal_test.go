package deduppg

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// TestClassify checks that errors keep their class and identity through
// the wrapping (the classes themselves are pgutil's, tested there).
func TestClassify(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	for _, tt := range []struct {
		err  error
		want duplex.ErrorClass
	}{
		{pg("08006"), duplex.ClassUnavailable},
		{pg("57P01"), duplex.ClassUnavailable},
		{pg("40P01"), duplex.ClassTransient},
		{pg("23505"), duplex.ClassPermanent},
		{pg("42P01"), duplex.ClassPermanent},
		{pg("XX000"), duplex.ClassUnknown},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, duplex.ClassUnavailable},
		{io.ErrUnexpectedEOF, duplex.ClassUnavailable},
		{context.Canceled, duplex.ClassUnavailable}, // by duplex.ClassOf
		{errors.New("something else"), duplex.ClassUnknown},
	} {
		err := classify("deduppg: test", tt.err)
		require.Equal(t, tt.want, duplex.ClassOf(err), "%v", tt.err)
		require.ErrorIs(t, err, tt.err)
		require.ErrorContains(t, err, "deduppg: test: ")
	}
}
