package duplex

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Chunks of different keys never wait on each other; a chunk sharing a key
// waits until the holder unlocks.
func TestKeyLocks(t *testing.T) {
	t.Parallel()
	l := newKeyLocks()
	unlockA := l.lock([]string{"k1", "k2", "k1"})
	unlockB := l.lock([]string{"k3"}) // disjoint: does not wait
	got, done := make(chan struct{}), make(chan struct{})
	go func() {
		unlock := l.lock([]string{"k3", "k2"})
		close(got)
		unlock()
		close(done)
	}()
	select {
	case <-got:
		t.Fatal("a chunk sharing held keys went ahead")
	case <-time.After(20 * time.Millisecond):
	}
	unlockA()
	select {
	case <-got:
		t.Fatal("went ahead while k3 is still held")
	case <-time.After(20 * time.Millisecond):
	}
	unlockB()
	<-done
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Empty(t, l.held)
}
