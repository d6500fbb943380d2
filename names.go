package duplex

import "fmt"

// Named is implemented by the parts of a sync that belong to one sync and
// one system: a change source reads that system, an applier or deduper
// serves it (cdc/pglogical, cdc/pgpoll, apply/applypg, dedup/dedupredis,
// duplexpg do). NewPipeline and NewSync compare the names of the parts they
// are given with the sync's Name and the Direction: a source named for
// another sync, for example, would not recognise the sync's own writes
// coming back. An empty name is not checked.
type Named interface {
	// SyncName is the name of the sync the part was built for.
	SyncName() string
	// SystemName is the name of the system the part reads or writes.
	SystemName() string
}

// checkNames returns an error for every part of c whose names disagree
// with c.Name or with the system it serves in c.Direction.
func checkNames(c *Config) []error {
	var errs []error
	for _, p := range []struct {
		field  string
		part   any
		system string
	}{
		{"Source", c.Source, c.Direction.From},
		{"Target", c.Target, c.Direction.To},
		{"Peer", c.Peer, c.Direction.From},
		{"Deduper", c.Deduper, c.Direction.To},
		{"LoopGuard", c.LoopGuard, c.Direction.From},
	} {
		n, ok := p.part.(Named)
		if !ok {
			continue
		}
		if s := n.SyncName(); s != "" && s != c.Name {
			errs = append(errs, &ConfigError{p.field, fmt.Sprintf("built for sync %q, but the sync is named %q", s, c.Name)})
		}
		if s := n.SystemName(); s != "" && s != p.system {
			errs = append(errs, &ConfigError{p.field, fmt.Sprintf("built for system %q, but serves system %q in %s", s, p.system, c.Direction)})
		}
	}
	return errs
}
