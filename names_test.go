package duplex_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// namedSource is a memdb source that says which sync and system it was
// built for, as cdc/pglogical's does.
type namedSource struct {
	*memdb.Source
	sync, system string
}

func (s namedSource) SyncName() string   { return s.sync }
func (s namedSource) SystemName() string { return s.system }

// namedApplier is a memdb applier that says which sync and system it
// writes, as apply/applypg's does.
type namedApplier struct {
	*memdb.Applier
	sync, system string
}

func (a namedApplier) SyncName() string   { return a.sync }
func (a namedApplier) SystemName() string { return a.system }

// TestNewSyncChecksPartNames checks that NewSync refuses parts built for
// another sync or another system, naming the part and both names, and
// accepts parts whose names agree.
func TestNewSyncChecksPartNames(t *testing.T) {
	t.Parallel()
	crm, billing := newDB(t, "crm", false), newDB(t, "billing", false)
	endpoint := func(db *memdb.DB, sourceSync, sourceSystem, applierSync, applierSystem string) duplex.Endpoint {
		return duplex.Endpoint{
			Name:    db.Name(),
			Source:  namedSource{db.Source(memdb.SourceConfig{Slot: "sync"}), sourceSync, sourceSystem},
			Applier: namedApplier{db.Applier("duplex"), applierSync, applierSystem},
		}
	}
	newSync := func(a, b duplex.Endpoint) error {
		_, err := duplex.NewSync(&duplex.SyncConfig{Name: "crm_billing", A: a, B: b, DeadLetters: printDLQ{}})
		return err
	}

	require.NoError(t, newSync(
		endpoint(crm, "crm_billing", "crm", "crm_billing", "crm"),
		endpoint(billing, "crm_billing", "billing", "crm_billing", "billing")))

	err := newSync(
		endpoint(crm, "crm_billng", "crm", "crm_billing", "crm"),
		endpoint(billing, "crm_billing", "billing", "crm_billing", "billing"))
	require.ErrorContains(t, err, `crm -> billing: duplex: Source: built for sync "crm_billng", but the sync is named "crm_billing"`)

	err = newSync(
		endpoint(crm, "crm_billing", "crm", "crm_billing", "crm"),
		endpoint(billing, "crm_billing", "billing", "crm_billing", "crm"))
	require.ErrorContains(t, err, `crm -> billing: duplex: Target: built for system "crm", but serves system "billing" in crm_to_billing`)
	require.ErrorContains(t, err, `billing -> crm: duplex: Peer: built for system "crm", but serves system "billing" in billing_to_crm`)
}
