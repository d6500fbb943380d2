package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelayGrowsAndCaps(t *testing.T) {
	t.Parallel()
	p := Policy{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	for attempt, want := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 4: 80, 5: 80, 50: 80} {
		want *= time.Millisecond
		for range 100 {
			d := p.Delay(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

func TestDelayDefaults(t *testing.T) {
	t.Parallel()
	d := Policy{}.Delay(1)
	if d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("default first delay %v, want within [50ms, 100ms]", d)
	}
}

func TestSleepCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep on a canceled context reported a full wait")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep did not complete")
	}
}
