package dedupredis

import "github.com/duplexsync/duplex"

var _ duplex.Named = (*Deduper)(nil)

// SyncName returns Config.Sync ("" when not given).
func (d *Deduper) SyncName() string { return d.sync }

// SystemName returns Config.Target ("" when not given).
func (d *Deduper) SystemName() string { return d.target }
