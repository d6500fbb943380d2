package applypg

import "github.com/duplexsync/duplex"

var _ duplex.Named = (*Applier)(nil)

// SyncName returns Config.Sync: the sync the Applier writes for.
func (a *Applier) SyncName() string { return a.cfg.Sync }

// SystemName returns Config.Target: the system the Applier writes.
func (a *Applier) SystemName() string { return a.cfg.Target }
