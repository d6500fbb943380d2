package pglogical

import "github.com/duplexsync/duplex"

var _ duplex.Named = (*Source)(nil)

// SyncName returns Config.Sync: the sync the source captures changes for.
func (s *Source) SyncName() string { return s.cfg.Sync }

// SystemName returns Config.System: the system the source reads.
func (s *Source) SystemName() string { return s.cfg.System }
