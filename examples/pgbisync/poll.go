package main

import "github.com/duplexsync/duplex/cdc/pgpoll"

// pollDeletes maps -poll-deletes to pgpoll's delete detection.
var pollDeletes = map[string]pgpoll.DeleteDetection{
	"none":       pgpoll.DeletesNone,
	"keydiff":    pgpoll.DeletesKeyDiff,
	"tombstones": pgpoll.DeletesTombstones,
}
