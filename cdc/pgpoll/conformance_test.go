package pgpoll_test

import (
	"testing"
	"time"

	"github.com/duplexsync/duplex/cdc/cdctest"
	"github.com/duplexsync/duplex/cdc/pgpoll"
)

// TestConformance runs the cdctest suite with each way of detecting
// deletes. Polling has no before images from the database (Before comes
// from the last-emitted state, which the suite does not model), no
// origins, no transaction grouping, and coalesces versions.
func TestConformance(t *testing.T) {
	t.Parallel()
	t.Run("Tombstones", func(t *testing.T) {
		t.Parallel()
		cdctest.Run(t, cdctest.Features{Deletes: true, ExactResume: true}, func(t *testing.T) cdctest.Harness {
			return newHarness(t, func(c *pgpoll.Config) { c.DeleteDetection = pgpoll.DeletesTombstones })
		})
	})
	t.Run("KeyDiff", func(t *testing.T) {
		t.Parallel()
		cdctest.Run(t, cdctest.Features{Deletes: true, ExactResume: true}, func(t *testing.T) cdctest.Harness {
			return newHarness(t, func(c *pgpoll.Config) {
				c.DeleteDetection = pgpoll.DeletesKeyDiff
				c.KeyDiffEvery = 20 * time.Millisecond
			})
		})
	})
	t.Run("NoDeletes", func(t *testing.T) {
		t.Parallel()
		cdctest.Run(t, cdctest.Features{ExactResume: true}, func(t *testing.T) cdctest.Harness {
			return newHarness(t, nil)
		})
	})
}
