package report

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A sticky error set by Last (no Broadcast) while an fsync gathers can leave
// a waiter in cond.Wait forever when the gatherer then returns early from
// flushLocked without a Broadcast.
func TestJournalLastErrorWhileGathering(t *testing.T) {
	dir := t.TempDir()
	for it := 0; it < 200; it++ {
		j := openTest(t, filepath.Join(dir, fmt.Sprint(it)), listA, false)
		const W = 6
		j.SetGroup(W + 2)
		j.mu.Lock()
		j.fsyncTime = 2 * time.Millisecond // gather up to 1ms
		j.idx.set(999, 1)                  // Last(999) fails to decode
		j.mu.Unlock()
		var wg sync.WaitGroup
		done := make(chan struct{})
		for w := 0; w < W; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				j.Committing(w+1, 1, "a@b", "")
			}(w)
		}
		go func() {
			time.Sleep(time.Duration(800+rand.Intn(400)) * time.Microsecond)
			j.Last(999)
		}()
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			j.mu.Lock()
			t.Fatalf("iteration %d: committers hung: joined=%d syncing=%v err=%v", it, j.joined, j.syncing, j.err)
		}
		j.Close()
	}
}
