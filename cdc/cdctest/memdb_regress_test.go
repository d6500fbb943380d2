// Regression tests for bugs found in package memdb while writing this suite.
// They guard memdb against their return.
package cdctest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
)

// memdb/source.go, Source.Stream: a from past the end of the log is clamped
// to the end (`next = min(next, len(db.log))`), so the changes written next
// are delivered although they are at or before from. Ack rejects such a
// position with an error; Stream should too (or skip up to from). This
// matters when a memdb is recreated while the target keeps its checkpoint.
func TestMemdbBugStreamFromPastEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	const past = 100_000
	from := duplex.Position(fmt.Sprintf("%020d", past))
	first := make(chan duplex.Change, 1)
	res := make(chan error, 1)
	defer func() {
		cancel()
		<-res
	}()
	go func() {
		res <- h.Source().Stream(ctx, from, func(_ context.Context, b []duplex.Change) error {
			select {
			case first <- b[0]:
			default:
			}
			return nil
		})
	}()
	// Write until something is delivered: Stream starts long before the
	// log reaches from.
	for id := int64(1); id <= past+1; id++ {
		require.NoError(t, h.Insert(t.Context(), id, "row", id))
		if len(first) > 0 {
			break
		}
	}
	select {
	case c := <-first:
		require.Greater(t, c.Position, from, "Stream(from=%s) delivered %s at %s", from, &c, c.Position)
	case err := <-res:
		res <- err // for the deferred wait
		require.Error(t, err, "Stream returned nil without delivering")
	case <-time.After(10 * time.Second):
		t.Fatal("nothing delivered")
	}
}
