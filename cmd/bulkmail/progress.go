package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/bulkmail/bulkmail/internal/report"
)

// progress shows how a run goes: a live bar on a terminal, a plain line
// every few seconds otherwise (cron mail, log files).
type progress struct {
	mu      sync.Mutex
	counts  statusCounts
	bar     *progressbar.ProgressBar
	w       io.Writer
	start   time.Time
	done    chan struct{}
	stopped sync.Once
}

func newProgress(w io.Writer) *progress {
	p := &progress{counts: statusCounts{}, w: w, start: time.Now(), done: make(chan struct{})}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("sending"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("msg"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		return p
	}
	go p.periodic(10 * time.Second)
	return p
}

func (p *progress) add(s report.Status) {
	p.mu.Lock()
	p.counts[s]++
	p.mu.Unlock()
	if p.bar != nil {
		p.bar.Add(1)
	}
}

func (p *progress) periodic(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.mu.Lock()
			line := p.counts.String()
			p.mu.Unlock()
			fmt.Fprintf(p.w, "bulkmail: %s so far (%s)\n", line, time.Since(p.start).Round(time.Second))
		case <-p.done:
			return
		}
	}
}

func (p *progress) stop() {
	p.stopped.Do(func() {
		close(p.done)
		if p.bar != nil {
			p.bar.Finish()
		}
	})
}
