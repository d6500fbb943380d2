package resolvetest

import (
	"context"
	"sync"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/memdb"
)

// Times is how a Pair's appliers report the commit times of rows (under
// duplex.CommitTimeField), which commit-timestamp resolvers compare.
type Times uint8

const (
	// NoTimes: the appliers report no commit times.
	NoTimes Times = iota
	// ChangeTimes: a row's time is that of the newest change it reflects:
	// the latest user change to the key on that replica, or the newest
	// source change the sync applied to it.
	ChangeTimes
	// WriteTimes: a row's time is the commit time of its last write,
	// whoever made it, as applypg reports with track_commit_timestamp: for
	// a row the sync wrote, the time of the sync's apply.
	WriteTimes
)

func (t Times) applier(db *memdb.DB) duplex.Applier {
	switch t {
	case ChangeTimes:
		return &changeTimes{Applier: db.Applier("duplex"), db: db, synced: map[string]time.Time{}}
	case WriteTimes:
		return &writeTimes{Applier: db.Applier("duplex"), db: db}
	}
	return db.Applier("duplex")
}

// changeTimes is a memdb Applier reporting ChangeTimes.
type changeTimes struct {
	*memdb.Applier
	db *memdb.DB

	mu     sync.Mutex
	synced map[string]time.Time
}

func (c *changeTimes) Lookup(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	rows, err := c.Applier.Lookup(ctx, t, keys)
	if err != nil {
		return nil, err
	}
	user := map[string]time.Time{}
	for _, ch := range c.db.Changes() {
		if ch.Origin == "" && ch.Table == t {
			user[ch.Key.String()] = ch.CommitTime
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, row := range rows {
		if row == nil {
			continue
		}
		at := user[keys[i].String()]
		if s := c.synced[t.String()+" "+keys[i].String()]; s.After(at) {
			at = s
		}
		row[duplex.CommitTimeField] = at
	}
	return rows, nil
}

func (c *changeTimes) Apply(ctx context.Context, b *duplex.Batch) error {
	if err := c.Applier.Apply(ctx, b); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range b.Writes {
		k := w.Table.String() + " " + w.Key.String()
		if w.Change.CommitTime.After(c.synced[k]) {
			c.synced[k] = w.Change.CommitTime
		}
	}
	return nil
}

// writeTimes is a memdb Applier reporting WriteTimes.
type writeTimes struct {
	*memdb.Applier
	db *memdb.DB
}

func (x *writeTimes) Lookup(ctx context.Context, t duplex.Table, keys []duplex.Key) ([]duplex.Values, error) {
	rows, err := x.Applier.Lookup(ctx, t, keys)
	if err != nil {
		return nil, err
	}
	last := map[string]time.Time{}
	for _, ch := range x.db.Changes() {
		if ch.Table == t {
			last[ch.Key.String()] = ch.CommitTime
		}
	}
	for i, row := range rows {
		if row != nil {
			row[duplex.CommitTimeField] = last[keys[i].String()]
		}
	}
	return rows, nil
}
