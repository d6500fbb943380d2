// Applying ahead: while the target commits one chunk, the worker takes in and plans the
// next one, when the two touch different keys; the chunk in flight lands (concludes and
// settles) before the next one's transaction starts, so chunks still commit and settle in
// order.

package duplex

// flight is a chunk whose target transaction commits beside the worker.
type flight struct {
	items  []*item
	pl     plan
	unlock func() // the chunk's key locks, held until it concludes
	keys   map[string]struct{}
	done   chan error // the transaction's outcome (buffered)
	err    error      // the outcome, once received
	landed bool       // err was received from done
}

// runChunkAhead is runChunk for the chunks of the stream: it plans items
// while the chunk before commits, and leaves items committing in flight
// when their plan has a target transaction. An item whose key the chunk in
// flight touches, or a key locked elsewhere (the other direction of a
// Sync), waits for that chunk to land first: a plan never reads a row the
// chunk in flight is writing, and the worker never holds one chunk's locks
// while waiting for another's.
func (p *Pipeline) runChunkAhead(items []*item) error {
	if err := p.landIfTouched(items); err != nil {
		return err
	}
	// Routed after the chunk before landed: its failure may have parked
	// a key of items.
	items = p.routeParked(items)
	if len(items) == 0 {
		return nil
	}
	var unlock func()
	if p.flight != nil {
		var ok bool
		if unlock, ok = p.planner.tryLock(items); !ok {
			// Locked elsewhere: never wait holding the flight's locks.
			if err := p.land(); err != nil {
				return err
			}
		}
	}
	if unlock == nil {
		unlock = p.planner.lock(items)
	}
	pl, err := p.planner.plan(items)
	if f := p.flight; f != nil {
		if !f.landed {
			f.received(<-f.done)
		}
		if f.err != nil {
			// The chunk before failed: its retries lock its keys again
			// and may wait out an outage, so items' locks go first; then
			// items are planned again after what the retries changed.
			unlock()
			if err := p.land(); err != nil {
				return err
			}
			return p.runChunk(items)
		}
		if err := p.land(); err != nil {
			unlock()
			return err
		}
	}
	if err != nil || pl.empty() {
		if err == nil {
			err = p.applyPlan(items, pl)
		}
		return p.conclude(items, unlock, pl, err)
	}
	b := p.batchOf(items, pl)
	f := &flight{items: items, pl: pl, unlock: unlock, keys: make(map[string]struct{}, len(items)), done: make(chan error, 1)}
	for _, it := range items {
		f.keys[it.key] = struct{}{}
	}
	go func() { f.done <- p.applyBatch(b, pl) }()
	p.flight = f
	return nil
}

// landIfTouched lands the chunk in flight when items touch one of its keys:
// what the worker decides about them (a duplicate delivery, a key parked or
// dead-lettered) must see that chunk settled.
func (p *Pipeline) landIfTouched(items []*item) error {
	if p.flight == nil || !p.flight.touches(items) {
		return nil
	}
	return p.land()
}

// touches reports whether items touch a key of the chunk in flight.
func (f *flight) touches(items []*item) bool {
	for _, it := range items {
		if _, ok := f.keys[it.key]; ok {
			return true
		}
	}
	return false
}

// received records the outcome of the chunk in flight, received from its
// done channel (by land, or by the worker's select).
func (f *flight) received(err error) {
	f.err, f.landed = err, true
}

// land waits for the chunk in flight, if any, and concludes it: settled,
// or retried, split, parked or dead-lettered as its error asks.
func (p *Pipeline) land() error {
	f := p.flight
	if f == nil {
		return nil
	}
	p.flight = nil
	if !f.landed {
		f.received(<-f.done)
	}
	return p.conclude(f.items, f.unlock, f.pl, f.err)
}

// abandon waits for the chunk in flight, if any, and releases its keys
// without settling it: the worker is stopping on an error, and the chunk
// is merged again after a restart (nothing of it was acknowledged).
func (p *Pipeline) abandon() {
	if f := p.flight; f != nil {
		p.flight = nil
		if !f.landed {
			<-f.done
		}
		f.unlock()
	}
}

// flightDone returns the done channel of the chunk in flight (nil: none),
// for the worker's select.
func (p *Pipeline) flightDone() <-chan error {
	if p.flight == nil || p.flight.landed {
		return nil
	}
	return p.flight.done
}

// firstInFlight returns the first item of the chunk in flight (nil: none;
// a chunk's items are in delivery order): no position from it on is
// acknowledged before it lands.
func (p *Pipeline) firstInFlight() *item {
	if p.flight == nil {
		return nil
	}
	return p.flight.items[0]
}
