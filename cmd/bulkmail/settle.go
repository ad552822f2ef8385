package main

import "sync"

// settleGate tells the result writer, which runs beside a send, when each
// row's record in the journal is the one the run leaves: the producer has
// passed the row and no message of it is with the pool any more. Rows
// settle roughly in list order, so the writer can follow a little behind
// the sending instead of starting after the last message; a row held back
// (a retry waiting its turn) holds the writer until it settles or the run
// ends.
type settleGate struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	passed   int           // the producer is done with every row up to this one
	inflight map[int]bool  // rows handed to the pool and not finished
	over     bool          // the run has ended: every row is settled
	reason   string        // for rows the journal does not know, once over
}

func newSettleGate() *settleGate {
	return &settleGate{changed: make(chan struct{}), inflight: make(map[int]bool)}
}

// notifyLocked wakes the waiters; call with mu held.
func (g *settleGate) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// pass says the producer is done with every row before row.
func (g *settleGate) pass(row int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if row-1 > g.passed {
		g.passed = row - 1
		g.notifyLocked()
	}
}

// start says row's message is going to the pool; finish that its outcome
// is in the journal (or that it never went after all).
func (g *settleGate) start(row int) {
	g.mu.Lock()
	g.inflight[row] = true
	g.mu.Unlock()
}

func (g *settleGate) finish(row int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.inflight, row)
	g.notifyLocked()
}

// end says the run is over: rows the journal does not know were not
// attempted, for reason.
func (g *settleGate) end(reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.over, g.reason = true, reason
	g.notifyLocked()
}

// wait returns once row is settled, with whether the run is over; or
// returns false at once when quit is closed.
func (g *settleGate) wait(row int, quit <-chan struct{}) (over, ok bool) {
	for {
		g.mu.Lock()
		over, settled, changed := g.over, row <= g.passed && !g.inflight[row], g.changed
		g.mu.Unlock()
		if over || settled {
			return over, true
		}
		select {
		case <-changed:
		case <-quit:
			return false, false
		}
	}
}

// waitOver returns the reason for rows not attempted once the run is
// over; ok is false if quit closed first.
func (g *settleGate) waitOver(quit <-chan struct{}) (reason string, ok bool) {
	for {
		g.mu.Lock()
		over, reason, changed := g.over, g.reason, g.changed
		g.mu.Unlock()
		if over {
			return reason, true
		}
		select {
		case <-changed:
		case <-quit:
			return "", false
		}
	}
}
