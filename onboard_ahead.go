package duplex

// onboard_ahead.go: onboarding reads and plans the next chunk of a table
// while the chunk before it commits.

import (
	"context"
	"sync"
)

// chunks returns next, which onboards the next chunk of t after after
// into p (done: the table is finished), and stop, which ends what next
// left running.
//
// A repair goes chunk by chunk (its keys stay locked from the read to the
// commit). An onboarding prepares the chunks in a goroutine, one ahead of
// their commits: a chunk's keys are disjoint from those of the chunks
// before it, and a commit writes rows and records of its own chunk's keys
// only, so the commits change none of the rows and records the next chunk
// reads (its rows it reads at the slots' snapshot where there is one).
func (o *onboarder) chunks(ctx context.Context, t Table, after Key) (next func(p *OnboardingProgress) (bool, error), stop func()) {
	if o.repair {
		return func(p *OnboardingProgress) (bool, error) {
			hi, done, err := o.chunk(ctx, t, after, p)
			after = hi
			return done, err
		}, func() {}
	}
	type prepared struct {
		pc  *preparedChunk
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan prepared, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(ch)
		for {
			pc, _, err := o.prepare(ctx, t, after) // not a repair: nothing to unlock
			select {
			case ch <- prepared{pc, err}:
			case <-ctx.Done():
				return
			}
			if err != nil || pc.last {
				return
			}
			after = pc.hi
		}
	})
	next = func(p *OnboardingProgress) (bool, error) {
		r, ok := <-ch
		if !ok {
			return false, context.Cause(ctx)
		}
		if r.err != nil {
			return false, r.err
		}
		return r.pc.last, o.finish(ctx, t, r.pc, p)
	}
	stop = func() {
		cancel()
		wg.Wait()
	}
	return next, stop
}
