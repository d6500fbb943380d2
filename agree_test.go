package duplex_test

import (
	"testing"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/agree/agreetest"
)

func TestMemoryAgreementsConformance(t *testing.T) {
	t.Parallel()
	agreetest.Run(t, func(*testing.T) duplex.AgreementStore { return duplex.NewMemoryAgreements(1 << 16) })
}
