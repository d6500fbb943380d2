package memdb

import (
	"context"
	"fmt"
	"slices"

	"github.com/duplexsync/duplex"
)

// SourceConfig configures a Source.
type SourceConfig struct {
	// Slot names the source's stored position, like a replication slot.
	// Two sources on the same slot share it. "": "default".
	Slot string
	// BatchSize is the most changes per batch. 0: 256.
	BatchSize int
	// SkipOrigins lists replication origins whose changes are not delivered
	// (as pgoutput's origin filter does).
	SkipOrigins []string
	// StopWhenIdle makes Stream return nil once it has delivered the whole
	// log, instead of waiting for more (handy in tests).
	StopWhenIdle bool
}

// Source streams a DB's change log. It implements duplex.ChangeSource.
type Source struct {
	db  *DB
	cfg SourceConfig
}

var _ duplex.ChangeSource = (*Source)(nil)

// Source returns a change source over db's log.
func (db *DB) Source(cfg SourceConfig) *Source {
	if cfg.Slot == "" {
		cfg.Slot = "default"
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	return &Source{db: db, cfg: cfg}
}

// Stream implements duplex.ChangeSource. It resumes after from, or after
// the slot's acknowledged position when from is "".
func (s *Source) Stream(ctx context.Context, from duplex.Position, fn func(context.Context, []duplex.Change) error) error {
	next, err := parsePos(from)
	if err != nil {
		return err
	}
	db := s.db
	db.mu.Lock()
	if next > len(db.log) {
		n := len(db.log)
		db.mu.Unlock()
		return duplex.Permanent(fmt.Errorf("memdb: resume position %s is past the end of the log (%d changes): the log this position belongs to is gone", from, n))
	}
	next = max(next, db.slots[s.cfg.Slot]) // like a slot: never before its confirmed position
	db.mu.Unlock()
	for {
		if ctx.Err() != nil {
			return nil
		}
		db.mu.Lock()
		end := min(len(db.log), next+s.cfg.BatchSize)
		var batch []duplex.Change
		for _, c := range db.log[next:end] {
			if len(s.cfg.SkipOrigins) > 0 && c.Origin != "" && slices.Contains(s.cfg.SkipOrigins, c.Origin) {
				continue
			}
			c.Key = append(duplex.Key(nil), c.Key...)
			c.Before, c.After = c.Before.Clone(), c.After.Clone()
			batch = append(batch, c)
		}
		wait := db.changed
		db.mu.Unlock()
		if end == next {
			if s.cfg.StopWhenIdle {
				return nil
			}
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		next = end
		if len(batch) == 0 {
			continue
		}
		if err := fn(ctx, batch); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// Ack implements duplex.ChangeSource: the slot resumes after p.
func (s *Source) Ack(_ context.Context, p duplex.Position) error {
	n, err := parsePos(p)
	if err != nil {
		return err
	}
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	if n > len(s.db.log) {
		return fmt.Errorf("memdb: ack %s past the end of the log (%d)", p, len(s.db.log))
	}
	if n > s.db.slots[s.cfg.Slot] {
		s.db.slots[s.cfg.Slot] = n
	}
	return nil
}

// Acked returns the slot's acknowledged position ("" when none).
func (s *Source) Acked() duplex.Position {
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	if n := s.db.slots[s.cfg.Slot]; n > 0 {
		return formatPos(n)
	}
	return ""
}
