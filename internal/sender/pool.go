package sender

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Status is the final disposition of one message.
type Status string

const (
	Delivered Status = "delivered" // the final dot got a 2xx
	Rejected  Status = "rejected"  // a 5xx to MAIL, the first RCPT or the data: final
	Deferred  Status = "deferred"  // a 4xx every time it was tried
	Failed    Status = "failed"    // never answered (connections kept failing) or refused locally
	InDoubt   Status = "in_doubt"  // the final dot went out and no trustworthy reply came back
)

// Job is one message for the pool.
type Job struct {
	ID  int // the caller's name for it (a row number)
	Msg *Message
	// MaxAttempts, if above zero, bounds the attempts at this message in
	// this run below 1+PoolConfig.Retries: what is left of a budget kept
	// across runs (bulkmail's --max-attempts).
	MaxAttempts int
	// Data is the caller's, carried with the job and never looked at by
	// the pool: what the hooks need to know about it, without a lookup.
	Data any

	attempts int
	first    time.Time
	due      time.Time
	last     Delivery
	lastErr  error
	index    int // in the retry heap
}

// Result is what became of a Job.
type Result struct {
	Job      *Job
	Status   Status
	Delivery Delivery // of the last attempt
	Attempts int
	Conn     int           // the connection that carried the last attempt
	Start    time.Time     // when the first attempt began
	Duration time.Duration // from Start to the final reply
	Err      error         // why it was not delivered; nil when delivered
	// Lazy says that this worker's next step is to commit (PoolConfig.
	// Commit) a message whose envelope the server has already answered,
	// or else to call PoolConfig.Flush, with nothing to wait for in
	// between. A hook may then leave this result to be made durable
	// together with that commit: one fsync per message instead of two.
	Lazy bool
}

// PoolConfig configures a Pool. Fields left zero take the default noted.
type PoolConfig struct {
	// Dial says how to reach the server.
	Dial Config
	// Workers is the number of connections, each owned by one worker for
	// its life (default 4).
	Workers int
	// Limiter, shared by all workers, is waited on before every attempt.
	// nil means no limit.
	Limiter *rate.Limiter
	// Retries is how many more times a message is tried after a 4xx or a
	// connection that failed before its final dot. 0 means never.
	Retries int
	// RetryWait is the first back-off after a 4xx, doubled on each retry
	// (default 30s); RetryMaxWait caps it (default 5m). Redials back off the
	// same way from RetryWait/10.
	RetryWait    time.Duration
	RetryMaxWait time.Duration
	// MaxPerConnection closes a connection with QUIT after that many
	// messages and dials a fresh one (0: no limit).
	MaxPerConnection int
	// MaxErrors stops the run after that many connection failures in a
	// row, across all workers (default 10).
	MaxErrors int
	// Commit is called just before a message's final dot; if it returns an
	// error the message is abandoned and the run stops.
	Commit func(j *Job, attempt int) error
	// Done is called once per Job with its final Result, from the worker
	// that finished it, before that worker commits another message (see
	// Result.Lazy). An error stops the run.
	Done func(Result) error
	// Flush, when set, is called by a worker that passed a Lazy result to
	// Done or Retrying and then did not go on to Commit: before it waits
	// for anything (the network, the rate limit, the next job) or stops.
	// conn is the worker's connection, as in Result.Conn. An error stops
	// the run.
	Flush func(conn int) error
	// Retrying, when set, is called before a message is queued for
	// another attempt, with the answer it got (a 4xx to its envelope or
	// to the final dot, a connection that failed before the dot):
	// recorded, it tells a run resumed after a crash that the message was
	// refused, not in doubt, and that it waits for a retry. An error stops
	// the run.
	Retrying func(Result) error
	// Logf reports connection events to the operator (nil: silent).
	Logf func(format string, args ...any)
}

// BreakerError stops a run after too many connection failures in a row.
type BreakerError struct {
	Failures int
	Last     error
}

func (e *BreakerError) Error() string {
	return fmt.Sprintf("sender: stopped after %d connection failures in a row; last: %v", e.Failures, e.Last)
}

func (e *BreakerError) Unwrap() error { return e.Last }

// Pool delivers jobs over long-lived connections.
type Pool struct {
	cfg         PoolConfig
	sched       scheduler
	conns       atomic.Int64 // connections dialled so far: the next id
	live        atomic.Int64 // connections open or being dialled now
	consecutive atomic.Int64 // connection failures since the last answer

	slowMu   sync.Mutex
	lastSlow time.Time // when the rate was last lowered

	stopOnce   sync.Once
	stopErr    error
	hookFailed bool // the stop came from Commit, Done or Retrying: record nothing more
	stop       context.CancelFunc
}

// NewPool returns a pool; Run starts it.
func NewPool(cfg PoolConfig) *Pool {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = 30 * time.Second
	}
	if cfg.RetryMaxWait <= 0 {
		cfg.RetryMaxWait = 5 * time.Minute
	}
	if cfg.RetryMaxWait < cfg.RetryWait {
		cfg.RetryWait = cfg.RetryMaxWait
	}
	if cfg.MaxErrors <= 0 {
		cfg.MaxErrors = 10
	}
	if cfg.Commit == nil {
		cfg.Commit = func(*Job, int) error { return nil }
	}
	if cfg.Flush == nil {
		cfg.Flush = func(int) error { return nil }
	}
	if cfg.Done == nil {
		cfg.Done = func(Result) error { return nil }
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return &Pool{cfg: cfg}
}

// Run delivers every job received from jobs until jobs is closed and every
// retry is settled. Cancelling ctx stops it taking new jobs and retries;
// messages already on the wire finish (their commands have deadlines).
// Jobs taken and not finished are not reported to Done, so the caller sees
// them as not attempted. Run returns nil, ctx's error, a *BreakerError, an
// *AuthError, or the error of Commit or Done.
func (p *Pool) Run(ctx context.Context, jobs <-chan *Job) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.stop = cancel
	p.sched.init(jobs)

	var wg sync.WaitGroup
	for i := 0; i < p.cfg.Workers; i++ {
		wg.Go(func() { p.work(runCtx) })
	}
	wg.Wait()

	if p.stopErr == nil && ctx.Err() == nil {
		return nil
	}
	// Messages waiting for a retry when the run stopped keep the answer
	// they last had; only after a failed hook (the journal) is nothing more
	// recorded.
	if !p.hookFailed {
		for _, j := range p.sched.drain() {
			if j.attempts == 0 {
				continue
			}
			status := Failed
			var re *ReplyError
			if errors.As(j.lastErr, &re) && re.Reply.Temporary() && re.Reply.Code != 421 {
				status = Deferred
			}
			reason := fmt.Errorf("run stopped before retry: %w", j.lastErr)
			if err := p.cfg.Done(p.result(j, status, 0, reason)); err != nil {
				p.failHook(err)
				break
			}
		}
	}
	if p.stopErr != nil {
		return p.stopErr
	}
	return ctx.Err()
}

// fail records the first reason to stop and stops intake.
func (p *Pool) fail(err error) {
	p.stopOnce.Do(func() {
		p.stopErr = err
		p.stop()
	})
}

// failHook stops the run because a caller's hook (its journal) failed:
// after that nothing more may be recorded.
func (p *Pool) failHook(err error) {
	p.stopOnce.Do(func() {
		p.stopErr = err
		p.hookFailed = true
		p.stop()
	})
}

func (p *Pool) work(ctx context.Context) {
	var c *Client
	defer func() {
		if c != nil {
			c.Quit()
			p.live.Add(-1)
		}
	}()
	backoff := time.Duration(0)
	rest := p.cfg.RetryWait // after a refusal at the greeting
jobs:
	for {
		j := p.sched.next(ctx)
		if j == nil {
			return
		}
		// Get a usable connection for this job.
		// A connection that the server closed or wrote to while it sat idle
		// is replaced before the message is tried: that costs no attempt.
		for c == nil || c.Broken() != nil || p.spent(c) || c.CheckIdle() != nil {
			if c != nil {
				c.Quit()
				p.live.Add(-1)
				c = nil
			}
			if !sleep(ctx, backoff) {
				p.sched.abandon(j)
				return
			}
			id := int(p.conns.Add(1))
			p.live.Add(1)
			nc, err := Dial(ctx, p.cfg.Dial, id)
			if err == nil {
				c = nc
				backoff = 0
				rest = p.cfg.RetryWait
				break
			}
			// Connections being dialled count as well as open ones, so that
			// of several refused at once at least one worker stays.
			others := p.live.Add(-1)
			if ctx.Err() != nil {
				p.sched.abandon(j)
				return
			}
			var ae *AuthError
			if errors.As(err, &ae) || errors.Is(err, ErrAuthInsecure) || errors.Is(err, ErrAuthUnavailable) || errors.Is(err, ErrNoTLS) {
				p.fail(err)
				p.sched.abandon(j)
				return
			}
			var re *ReplyError
			if errors.As(err, &re) && re.Command == "greeting" && others > 0 {
				// The server takes no more connections than it has: go on
				// with those (HAZARDS 37), and ask again now and then, with
				// a growing pause, in case it was only busy for a while.
				// Spread by ±20%, so that the workers refused together do
				// not all come back together.
				pause := rest - rest/5 + rand.N(2*rest/5+1)
				p.cfg.Logf("connection %d refused at greeting (%s); going on with the open connections, asking again in %s", id, re.Reply, pause.Round(time.Millisecond))
				p.sched.giveBack(j)
				if !p.sched.rest(ctx, pause) {
					return
				}
				rest = min(2*rest, p.cfg.RetryMaxWait)
				continue jobs
			}
			p.cfg.Logf("connection %d: %v", id, err)
			if p.connFailed(err) {
				p.sched.abandon(j)
				return
			}
			backoff = p.backoff(backoff, p.cfg.RetryWait/10)
		}
		if err := p.wait(ctx); err != nil {
			p.sched.abandon(j)
			return
		}
		if !p.attempt(ctx, c, j) {
			return
		}
	}
}

// spent reports whether c has carried as many messages as it may.
func (p *Pool) spent(c *Client) bool {
	return p.cfg.MaxPerConnection > 0 && c.Transactions() >= p.cfg.MaxPerConnection
}

// attempt sends j on c and then, as long as more are ready at once, the
// messages whose envelopes went out with the previous final dot
// (SendThen's look-ahead). It returns false when the worker must stop.
//
// Within the chain a result may be reported Lazy: the next message's
// commit makes it durable. When the chain ends without that commit,
// attempt calls Flush before the worker waits for anything.
func (p *Pool) attempt(ctx context.Context, c *Client, j *Job) (ok bool) {
	var ch chain
	// A message on the wire finishes even when the run is being stopped:
	// its commands have their own deadlines.
	wire := context.WithoutCancel(ctx)
	defer func() {
		if ch.unflushed {
			if err := p.cfg.Flush(c.ID()); err != nil {
				p.failHook(err)
				ok = false
			}
		}
	}()
	for j != nil {
		var next *Job
		peek := func() *Message {
			if ctx.Err() != nil || p.spent(c) {
				return nil
			}
			next = p.sched.tryNext()
			if next == nil {
				return nil
			}
			if p.cfg.Limiter != nil && !p.cfg.Limiter.Allow() {
				p.sched.giveBack(next)
				next = nil
				return nil
			}
			return next.Msg
		}
		// next goes on to its commit without a pause only if its envelope
		// is already answered and accepted on a connection still good.
		ahead := func() bool {
			return next != nil && ctx.Err() == nil && c.Queued() == next.Msg && c.QueuedReady()
		}
		ok := p.attemptOne(ctx, wire, c, j, peek, ahead, &ch)
		if next == nil {
			return ok
		}
		switch {
		case !ok:
			p.sched.abandon(next)
			return false
		case ctx.Err() != nil:
			// The run is stopping: a message whose envelope went ahead is not
			// committed yet, so it is not started. Quit closes the connection
			// without ending its data.
			p.sched.abandon(next)
			return true
		case c.Broken() == nil && c.Queued() == next.Msg:
			// Its envelope is on the wire and answered: go on from there.
		case c.Broken() == nil && c.Queued() == nil && !p.spent(c):
			// Not sent ahead (the server could not take it), but ready.
		default:
			// Its envelope went out on a connection that has since failed:
			// it was never committed, so it goes back untried.
			p.sched.giveBack(next)
			return true
		}
		j = next
	}
	return true
}

// attemptOne sends j once on c and settles it: reported, queued for
// retry, or (on a fatal error) abandoned. It returns false when the
// worker must stop.
func (p *Pool) attemptOne(ctx, wire context.Context, c *Client, j *Job, peek func() *Message, ahead func() bool, ch *chain) bool {
	j.attempts++
	if j.first.IsZero() {
		j.first = time.Now()
	}
	attempt := j.attempts
	commit := func() error {
		err := p.cfg.Commit(j, attempt)
		if err == nil {
			// The commit is durable, and so is everything reported before it.
			ch.unflushed = false
		}
		return err
	}
	// wire is ctx without its cancellation (see attempt).
	d, err := c.SendThen(wire, j.Msg, commit, peek)
	j.last, j.lastErr = d, err
	if ahead() {
		ch.lazy = true
		ch.unflushed = true
	} else {
		ch.lazy = false
	}

	var ce *CommitError
	var le *LocalError
	switch {
	case errors.As(err, &ce):
		p.failHook(err)
		p.sched.abandon(j)
		return false
	case errors.As(err, &le):
		return p.finishIn(ch, j, Failed, c.ID(), err)
	case err != nil && d.Committed && d.Data.Code != 421:
		// The data went out and no reply we can trust came back: it may
		// have been delivered. Never retried automatically.
		p.connFailed(err)
		return p.finishIn(ch, j, InDoubt, c.ID(), fmt.Errorf("connection failed after the final dot, delivery unknown: %w", err))
	case err != nil:
		p.maybeSlowDown(d)
		stopped := p.connFailed(err)
		if stopped || !p.mayRetry(j) {
			return p.finishIn(ch, j, Failed, c.ID(), err)
		}
		// Not delivered: try again at once on a new connection.
		return p.retryIn(ch, j, Failed, c.ID(), err, time.Now())
	}
	p.consecutive.Store(0)
	p.maybeSlowDown(d)
	status, reason := classify(d, j.Msg.To)
	j.lastErr = reason
	if status == Deferred && p.mayRetry(j) && ctx.Err() == nil {
		wait := p.cfg.RetryWait << (j.attempts - 1)
		if wait > p.cfg.RetryMaxWait || wait <= 0 {
			wait = p.cfg.RetryMaxWait
		}
		return p.retryIn(ch, j, Deferred, c.ID(), reason, time.Now().Add(wait))
	}
	return p.finishIn(ch, j, status, c.ID(), reason)
}

// mayRetry reports whether j, tried j.attempts times, may be tried again.
func (p *Pool) mayRetry(j *Job) bool {
	limit := 1 + p.cfg.Retries
	if j.MaxAttempts > 0 {
		limit = min(limit, j.MaxAttempts)
	}
	return j.attempts < limit
}

// maybeSlowDown halves the shared rate when a reply says the server is
// being sent too much: a 421, or a 4.7.x status (RFC 3463 security and
// policy, which rate limits use, e.g. Gmail's 421 4.7.28). From no limit
// it drops to one message a second per connection. One step a second at
// most, however many workers saw it; the rate does not rise again in this
// run.
func (p *Pool) maybeSlowDown(d Delivery) {
	l := p.cfg.Limiter
	if l == nil {
		return
	}
	// Every reply of the message, without building a slice of them: this
	// runs for every message.
	for i := -2; i < len(d.Rcpt); i++ {
		var r Reply
		switch i {
		case -2:
			r = d.Mail
		case -1:
			r = d.Data
		default:
			r = d.Rcpt[i]
		}
		if r.Code != 421 && !(r.Code/100 == 4 && strings.HasPrefix(r.Enhanced, "4.7.")) {
			continue
		}
		p.slowMu.Lock()
		defer p.slowMu.Unlock()
		if time.Since(p.lastSlow) < time.Second {
			return
		}
		p.lastSlow = time.Now()
		next := l.Limit() / 2
		if l.Limit() == rate.Inf {
			next = rate.Limit(p.cfg.Workers)
		}
		next = max(next, 0.1)
		l.SetLimit(next)
		p.cfg.Logf("the server asks to slow down (%s): at most %.2f messages/s from now on", r, float64(next))
		return
	}
}

// chain is what a worker's run of look-ahead messages knows about the
// durability of what it reported.
type chain struct {
	lazy      bool // the message being settled is followed by a commit
	unflushed bool // a Lazy result was reported and no commit followed yet
}

// retryIn queues j for another attempt at due, first telling the Retrying
// hook, so that its refusal is on record.
func (p *Pool) retryIn(ch *chain, j *Job, s Status, conn int, reason error, due time.Time) bool {
	if p.cfg.Retrying != nil {
		r := p.result(j, s, conn, fmt.Errorf("will be retried: %w", reason))
		r.Lazy = ch.lazy
		if err := p.cfg.Retrying(r); err != nil {
			p.failHook(err)
			p.sched.abandon(j)
			return false
		}
	}
	p.sched.retry(j, due)
	return true
}

// classify reads the status from the replies of a transaction the server
// answered in full. Only the first recipient decides: it is the row's.
func classify(d Delivery, to []string) (Status, error) {
	decisive := []struct {
		name string
		r    Reply
	}{{"MAIL FROM", d.Mail}, {"RCPT TO", d.Rcpt[0]}, {"end of data", d.Data}}
	for _, s := range decisive {
		switch {
		case s.r.Permanent():
			return Rejected, &ReplyError{Command: s.name, Reply: s.r}
		case s.r.Temporary():
			return Deferred, &ReplyError{Command: s.name, Reply: s.r}
		}
	}
	if d.Data.Code/100 == 2 {
		var pe PartialError
		for i, r := range d.Rcpt[1:] {
			if !r.Positive() {
				var addr string
				if i+1 < len(to) {
					addr = to[i+1]
				}
				pe.Refused = append(pe.Refused, RefusedRecipient{Index: i + 1, Addr: addr, Reply: r})
			}
		}
		if len(pe.Refused) > 0 {
			return Delivered, &pe
		}
		return Delivered, nil
	}
	return Failed, fmt.Errorf("sender: transaction ended without a reply to the data")
}

// PartialError is the reason of a Delivered result whose message reached
// its first recipient but not every other one (a Cc or Bcc refused at
// RCPT). Those recipients are not retried: the message went out, and a
// second transaction for them alone would be a message of its own.
type PartialError struct {
	Refused []RefusedRecipient
}

// RefusedRecipient is one envelope recipient a server refused.
type RefusedRecipient struct {
	Index int // in Message.To
	Addr  string
	Reply Reply
}

func (e *PartialError) Error() string {
	parts := make([]string, len(e.Refused))
	for i, r := range e.Refused {
		parts[i] = fmt.Sprintf("recipient %d refused: %s (%s%s", r.Index+1, r.Reply, r.Addr, partialMark)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// partialMark ends each refused recipient in a PartialError's text.
const partialMark = ", not retried)"

// IsPartial reports whether the error text of a delivered message (as a
// journal or result file keeps it) is a PartialError's: a run that reads
// outcomes back knows such rows by it. The reason comes first in that text
// (notes about the row follow it), so only a text that starts like
// Error's output counts, written before partialMark existed included
// ("[recipient 2 refused: 451 ...]").
func IsPartial(errText string) bool {
	rest, ok := strings.CutPrefix(errText, "[recipient ")
	if !ok {
		return false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	return n > 0 && strings.HasPrefix(rest[n:], " refused: ")
}

func (p *Pool) finishIn(ch *chain, j *Job, s Status, conn int, reason error) bool {
	r := p.result(j, s, conn, reason)
	r.Lazy = ch.lazy
	if err := p.cfg.Done(r); err != nil {
		p.failHook(err)
		p.sched.abandon(j)
		return false
	}
	p.sched.finished(j)
	return true
}

func (p *Pool) result(j *Job, s Status, conn int, reason error) Result {
	return Result{
		Job:      j,
		Status:   s,
		Delivery: j.last,
		Attempts: j.attempts,
		Conn:     conn,
		Start:    j.first,
		Duration: time.Since(j.first),
		Err:      reason,
	}
}

// connFailed counts a connection-level failure and trips the breaker; it
// reports whether the run is stopping.
func (p *Pool) connFailed(err error) bool {
	n := p.consecutive.Add(1)
	if n >= int64(p.cfg.MaxErrors) {
		p.fail(&BreakerError{Failures: int(n), Last: err})
		return true
	}
	return false
}

func (p *Pool) backoff(prev, first time.Duration) time.Duration {
	if first <= 0 {
		first = time.Millisecond
	}
	if prev == 0 {
		return first
	}
	return min(prev*2, p.cfg.RetryMaxWait)
}

func (p *Pool) wait(ctx context.Context) error {
	if p.cfg.Limiter == nil {
		return ctx.Err()
	}
	return p.cfg.Limiter.Wait(ctx)
}

// sleep waits d or until ctx ends; it reports whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// scheduler hands jobs to workers: retries that are due first, then new
// jobs from the caller's channel. It knows when everything is settled.
type scheduler struct {
	mu       sync.Mutex
	jobs     <-chan *Job
	closed   bool
	retries  retryHeap
	inflight int
	changed  chan struct{}
}

func (s *scheduler) init(jobs <-chan *Job) {
	s.jobs = jobs
	s.changed = make(chan struct{})
}

// notify wakes every worker waiting in next; call with mu held.
func (s *scheduler) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// next returns the next job to try, or nil when there is none left or ctx
// ended.
func (s *scheduler) next(ctx context.Context) *Job {
	for {
		if ctx.Err() != nil {
			return nil
		}
		s.mu.Lock()
		now := time.Now()
		if len(s.retries) > 0 && !s.retries[0].due.After(now) {
			j := heap.Pop(&s.retries).(*Job)
			s.inflight++
			s.mu.Unlock()
			return j
		}
		if s.closed && len(s.retries) == 0 && s.inflight == 0 {
			s.mu.Unlock()
			return nil
		}
		var timer *time.Timer
		var due <-chan time.Time
		if len(s.retries) > 0 {
			timer = time.NewTimer(s.retries[0].due.Sub(now))
			due = timer.C
		}
		jobs := s.jobs
		if s.closed {
			jobs = nil
		}
		changed := s.changed
		s.mu.Unlock()

		var got *Job
		select {
		case j, ok := <-jobs:
			s.mu.Lock()
			if ok {
				s.inflight++
				got = j
			} else if !s.closed {
				s.closed = true
				s.notify()
			}
			s.mu.Unlock()
		case <-due:
		case <-changed:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if got != nil {
			return got
		}
	}
}

// tryNext returns a job that can be tried now without waiting: a due
// retry or one already waiting in the caller's channel; else nil.
func (s *scheduler) tryNext() *Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.retries) > 0 && !s.retries[0].due.After(time.Now()) {
		s.inflight++
		return heap.Pop(&s.retries).(*Job)
	}
	if s.closed {
		return nil
	}
	select {
	case j, ok := <-s.jobs:
		if !ok {
			s.closed = true
			s.notify()
			return nil
		}
		s.inflight++
		return j
	default:
		return nil
	}
}

// finished settles a job. A worker waiting in next or rest waits for a
// job, a retry (retry wakes it) or the end of the run: a job settled
// gives it nothing to do unless it was the last, so only that one wakes
// them (every other would cost a channel and a wake-up of every waiter).
func (s *scheduler) finished(*Job) {
	s.mu.Lock()
	s.inflight--
	if s.closed && len(s.retries) == 0 && s.inflight == 0 {
		s.notify()
	}
	s.mu.Unlock()
}

// abandon lets go of a job because the run is stopping. One that was
// tried before goes back to the retry queue, so the run reports its last
// answer instead of losing it.
func (s *scheduler) abandon(j *Job) {
	if j.attempts > 0 {
		s.retry(j, time.Now())
		return
	}
	s.finished(j)
}

// retry puts a job back to be tried at due.
func (s *scheduler) retry(j *Job, due time.Time) {
	s.mu.Lock()
	s.inflight--
	j.due = due
	heap.Push(&s.retries, j)
	s.notify()
	s.mu.Unlock()
}

// rest waits d, or less when the run ends or ctx does meanwhile; it
// reports whether there may still be work.
func (s *scheduler) rest(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		over := s.closed && len(s.retries) == 0 && s.inflight == 0
		changed := s.changed
		s.mu.Unlock()
		if over {
			return false
		}
		select {
		case <-timer.C:
			return true
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// giveBack returns an untried job for another worker, now.
func (s *scheduler) giveBack(j *Job) { s.retry(j, time.Now()) }

// drain removes and returns the jobs still waiting for a retry.
func (s *scheduler) drain() []*Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Job, len(s.retries))
	copy(out, s.retries)
	s.retries = nil
	return out
}

// retryHeap orders jobs by when they are due.
type retryHeap []*Job

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, k int) bool { return h[i].due.Before(h[k].due) }
func (h retryHeap) Swap(i, k int) {
	h[i], h[k] = h[k], h[i]
	h[i].index, h[k].index = i, k
}
func (h *retryHeap) Push(x any) {
	j := x.(*Job)
	j.index = len(*h)
	*h = append(*h, j)
}
func (h *retryHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	*h = old[:len(old)-1]
	return j
}
