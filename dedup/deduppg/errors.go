package deduppg

import (
	"fmt"

	"github.com/duplexsync/duplex/internal/pgutil"
)

// classify marks err with its duplex.ErrorClass (pgutil.Classify: a lost or
// refused connection is unavailable, serialization failures and deadlocks
// transient, data and syntax errors permanent) and says what failed.
func classify(what string, err error) error {
	return fmt.Errorf("%s: %w", what, pgutil.Classify(err))
}
