package main

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"

	"github.com/bulkmail/bulkmail/internal/merge"
	"github.com/bulkmail/bulkmail/internal/report"
	"github.com/bulkmail/bulkmail/internal/sender"
)

// statusCounts counts result rows by status.
type statusCounts map[report.Status]int

func (c statusCounts) String() string {
	total := 0
	var parts []string
	for _, s := range report.Statuses() {
		if n := c[s]; n > 0 {
			total += n
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	if total == 0 {
		return "0 rows"
	}
	return rowsCount(total) + ": " + strings.Join(parts, ", ")
}

// rowsCount says "1 row" or "n rows".
func rowsCount(n int) string { return countOf(n, "row", "rows") }

// countOf says n things, in the singular for one.
func countOf(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// resultCounts are a result file's rows by status, and how many of the
// delivered ones name a Cc or Bcc that was refused (and not retried).
type resultCounts struct {
	statusCounts
	partial int
}

// undelivered counts rows that did not reach their recipient and were not
// meant to be skipped.
func (c statusCounts) undelivered() int {
	n := 0
	for s, k := range c {
		if s != report.Delivered && s != report.Skipped {
			n += k
		}
	}
	return n
}

// writeResult streams the list again and writes one result row per input
// row, in input order, from the journal: so a run that was killed loses
// nothing, and the next run (or bulkmail report) writes the whole file.
// Rows the journal does not know are reported as failed with reason;
// rows outside the shard are left out.
//
// It runs after the last message, so its time adds to every run's: one
// goroutine reads the list, lookup workers read each batch's journal
// records (report.Journal.LastBatch: a few reads a batch and a decode a
// row), and this goroutine writes the rows in list order as their batches
// complete.
func writeResult(path string, lf *listFlags, j *report.Journal, part shard, reason string) (resultCounts, error) {
	lo, err := lf.listOptions()
	if err != nil {
		return resultCounts{}, err
	}
	// Outcomes are paired with the list's rows by number, so only the list
	// the journal was written for will do. An export renamed over the list
	// during the run would put every outcome on the wrong row: it is
	// checked before the list is read and again before the result replaces
	// the old one, and then no result is written.
	sameList := func() error {
		id, err := hashFile(lf.list)
		if err != nil {
			return err
		}
		if want := j.Job().List; want != "" && id != want {
			return fmt.Errorf("%s is no longer the list the journal was written for (replaced during the run?): no result written; the journal keeps every outcome: put the original list back and run bulkmail report", lf.list)
		}
		return nil
	}
	if err := sameList(); err != nil {
		return resultCounts{}, err
	}
	list, err := merge.OpenList(lf.list, lo)
	if err != nil {
		return resultCounts{}, err
	}
	defer list.Close()
	res, err := report.CreateResult(path, list.Header())
	if err != nil {
		return resultCounts{}, err
	}
	p := startLookups(list, j, part, reason)
	// Every goroutine is done with list before the deferred Close.
	defer p.stop()
	counts := resultCounts{statusCounts: statusCounts{}}
	for b := range p.ordered {
		<-b.done
		for i := range b.recs {
			if err := res.Write(b.outs[i], b.recs[i].Values); err != nil {
				res.Abort()
				return resultCounts{}, err
			}
			o := &b.outs[i]
			counts.statusCounts[o.Status]++
			if o.Status == report.Delivered && sender.IsPartial(o.Error) {
				counts.partial++
			}
		}
		if b.err != nil {
			res.Abort()
			return resultCounts{}, b.err
		}
	}
	if err := sameList(); err != nil {
		res.Abort()
		return resultCounts{}, err
	}
	if err := res.Close(); err != nil {
		return resultCounts{}, err
	}
	return counts, nil
}

// lookupBatch is how many list rows travel together between the stages of
// writeResult: enough that channel handoffs cost little beside the rows'
// work, few enough that the batches in flight hold little memory.
const lookupBatch = 256

// resultBatch is a run of consecutive list rows and, once done is closed,
// each row's outcome.
type resultBatch struct {
	recs []merge.Recipient
	outs []report.Outcome
	err  error // a fatal list error after recs: the list ends here
	done chan struct{}
}

// lookups is the reading half of writeResult: a reader of the list and
// workers that look rows up in the journal.
type lookups struct {
	// ordered yields the batches in list order, closed after the last.
	ordered <-chan *resultBatch
	quit    chan struct{}
	wg      sync.WaitGroup
}

// startLookups starts reading list (restricted to part) and looking up
// each row's last outcome in j; a row the journal does not know is failed
// with reason. The caller reads p.ordered and must call p.stop.
func startLookups(list *merge.List, j *report.Journal, part shard, reason string) *lookups {
	workers := runtime.GOMAXPROCS(0)
	ordered := make(chan *resultBatch, 4*workers)
	work := make(chan *resultBatch, 4*workers)
	p := &lookups{ordered: ordered, quit: make(chan struct{})}
	emailIdx := list.EmailIndex()
	p.wg.Add(1 + workers)
	go func() {
		defer p.wg.Done()
		defer close(ordered)
		defer close(work)
		for end := false; !end; {
			b := &resultBatch{recs: make([]merge.Recipient, 0, lookupBatch), done: make(chan struct{})}
			for len(b.recs) < lookupBatch {
				rec, err := list.Next()
				if err == io.EOF {
					end = true
					break
				}
				var rowErr *merge.RowError
				if err != nil && !errors.As(err, &rowErr) {
					b.err, end = err, true
					break
				}
				if part.contains(rec) {
					b.recs = append(b.recs, rec)
				}
			}
			// To the workers first: a batch in ordered is always on its
			// way to being done, so the writer waiting for it cannot
			// wait for ever.
			select {
			case work <- b:
			case <-p.quit:
				return
			}
			select {
			case ordered <- b:
			case <-p.quit:
				return
			}
		}
	}()
	for range workers {
		go func() {
			defer p.wg.Done()
			rows := make([]int, 0, lookupBatch)
			found := make([]bool, 0, lookupBatch)
			for b := range work {
				// One LastBatch for the batch: it reads neighbouring
				// records together.
				rows = rows[:0]
				for _, rec := range b.recs {
					rows = append(rows, rec.Row)
				}
				found = found[:len(rows)]
				b.outs = make([]report.Outcome, len(b.recs))
				j.LastBatch(rows, b.outs, found)
				for i, rec := range b.recs {
					if !found[i] {
						b.outs[i] = report.Outcome{Row: rec.Row, Email: rowEmail(rec, emailIdx), Status: report.Failed, Error: reason}
					}
				}
				close(b.done)
			}
		}()
	}
	return p
}

// stop ends the goroutines of p, whether or not every batch was read, and
// returns once none of them uses the list or the journal any more.
func (p *lookups) stop() {
	close(p.quit)
	p.wg.Wait()
}
