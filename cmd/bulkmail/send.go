package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/bulkmail/bulkmail/internal/capture"
	"github.com/bulkmail/bulkmail/internal/merge"
	"github.com/bulkmail/bulkmail/internal/report"
	"github.com/bulkmail/bulkmail/internal/sender"
)

type sendFlags struct {
	listFlags
	smtpFlags
	workers       int
	rate          string
	burst         int
	retries       int
	retryWait     time.Duration
	retryMaxWait  time.Duration
	maxPerConn    int
	maxErrors     int
	result        string
	journal       string
	outbox        string
	resendInDoubt bool
	journalReset  bool
	templateEdit  bool
	only          string
	suppress      fileList
	dryRun        bool
	grace         time.Duration
	job           string
	shard         string
	maxAttempts   int
	journalSync   string
}

func newSendFlags(stderr io.Writer) (*flag.FlagSet, *sendFlags) {
	f := &sendFlags{}
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, `bulkmail send --list FILE --template FILE [--smtp URL] [flags]

Renders one message per row and delivers it. Without --smtp, delivers to the
built-in capture server on loopback (messages in --outbox): nothing leaves the machine.
Passwords come from $BULKMAIL_SMTP_PASSWORD or --password-file, never from flags.`)
	f.listFlags.register(fs)
	f.smtpFlags.register(fs)
	fs.IntVar(&f.workers, "workers", 4, "connections, each reused for message after message")
	fs.StringVar(&f.rate, "rate", "0", "messages per second for the whole run, e.g. 50/s, 600/m, 3600/h (0: no limit)")
	fs.IntVar(&f.burst, "burst", 1, "messages that may go at once above --rate")
	fs.IntVar(&f.retries, "retries", 3, "further attempts after a 4xx or a connection lost before the final dot")
	fs.DurationVar(&f.retryWait, "retry-wait", 30*time.Second, "first wait before retrying a 4xx, doubled each time")
	fs.DurationVar(&f.retryMaxWait, "retry-max-wait", 5*time.Minute, "longest wait between retries")
	fs.IntVar(&f.maxPerConn, "max-per-connection", 0, "messages per connection before QUIT and a fresh one (0: no limit)")
	fs.IntVar(&f.maxErrors, "max-errors", 10, "stop after this many connection failures in a row")
	fs.StringVar(&f.result, "result", "results.xlsx", "result file, .xlsx or .csv")
	fs.StringVar(&f.journal, "journal", "", "journal of outcomes that makes re-runs resume (default: RESULT.journal)")
	fs.StringVar(&f.outbox, "outbox", "outbox", "folder for messages when delivering to the built-in capture server")
	fs.BoolVar(&f.resendInDoubt, "resend-in-doubt", false, "resend rows whose final dot went out without a recorded reply")
	fs.BoolVar(&f.journalReset, "journal-reset", false, "start a new journal (the old one is kept beside it) instead of resuming")
	fs.BoolVar(&f.templateEdit, "template-edited", false, "resume a journal written with an earlier version of the template (the same campaign, its template corrected)")
	fs.StringVar(&f.only, "only", "", "re-run only rows whose last status is in this list, e.g. deferred,failed")
	fs.Var(&f.suppress, "suppress", "file of addresses never to send to (one per line, a CSV/XLSX with an email column, or an earlier result file: what it sent or suppressed); may be given several times")
	fs.BoolVar(&f.dryRun, "dry-run", false, "render and check every row and write the result file; send nothing")
	fs.DurationVar(&f.grace, "grace", 30*time.Second, "after SIGINT/SIGTERM, how long messages on the wire may take to finish")
	fs.StringVar(&f.job, "job", "", "TOML job file holding any of these flags (flags on the command line win)")
	fs.StringVar(&f.shard, "shard", "", "send only shard i of n (0 <= i < n), split by a hash of the address")
	fs.IntVar(&f.maxAttempts, "max-attempts", 20, "attempts a row may have over all runs; a deferred or failed row that used them is not tried again (0: no limit)")
	fs.StringVar(&f.journalSync, "journal-sync", "message", "what the journal fsyncs: message (each message's commit and reply, before the next message) or batch (one reservation per batch of rows: faster; after a crash of the machine, up to two batches and two rows per worker read in_doubt, rows never sent among them)")
	return fs, f
}

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer, env *environment) error {
	fs, f := newSendFlags(stderr)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("send: unexpected argument %q", fs.Arg(0))
	}
	if f.job != "" {
		if err := applyJobFile(fs, f.job); err != nil {
			return err
		}
	}
	if f.journalSync != "message" && f.journalSync != "batch" {
		return usageErr("--journal-sync %q: want message or batch", f.journalSync)
	}
	shard, err := parseShard(f.shard)
	if err != nil {
		return err
	}
	if f.workers < 1 {
		return usageErr("--workers must be at least 1")
	}
	limit, err := parseRate(f.rate)
	if err != nil {
		return err
	}
	only, err := parseStatuses(f.only)
	if err != nil {
		return err
	}
	for st := range only {
		switch {
		case st == report.Delivered || st == report.Rejected:
			return usageErr("--only %s: %s rows are never sent again", st, st)
		case st == report.InDoubt && !f.resendInDoubt:
			return usageErr("--only in_doubt: an in_doubt row may have been delivered; add --resend-in-doubt to send it again")
		}
	}
	switch strings.ToLower(filepath.Ext(f.result)) {
	case ".xlsx", ".csv":
	default:
		return usageErr("--result %q: the result file must end in .xlsx or .csv", f.result)
	}
	if f.dryRun {
		// A rehearsal never replaces the result of a real run.
		resultSet := false
		fs.Visit(func(fl *flag.Flag) { resultSet = resultSet || fl.Name == "result" })
		if !resultSet {
			ext := filepath.Ext(f.result)
			f.result = strings.TrimSuffix(f.result, ext) + ".dry-run" + ext
		}
	}
	journalSet := f.journal != ""
	if !journalSet {
		f.journal = f.result + ".journal"
	}
	if f.dryRun {
		if _, err := os.Stat(f.journal); err == nil {
			if journalSet {
				return usageErr("--dry-run --journal %s: that is a real run's journal (a dry run keeps its own, and would write the result %s); leave --journal out, and choose a --result that no real run uses", f.journal, f.result)
			}
			return usageErr("--dry-run --result %s: that is the result of a real run (it has the journal %s); choose another --result", f.result, f.journal)
		}
	}
	suppressed, err := readSuppressions(f.suppress...)
	if err != nil {
		return err
	}

	// Everything that can be checked before a connection is: the template,
	// the list's columns, the server URL and credentials.
	ids := &messageIDs{env: env}
	list, tmpl, err := f.listFlags.open(env, ids.forRow)
	if err != nil {
		return err
	}
	defer list.Close()
	var cfg sender.Config
	if f.url != "" {
		if cfg, err = f.smtpFlags.config(env); err != nil {
			return err
		}
	}
	job, err := jobID(list, shard, f.template, f.html)
	if err != nil {
		return withCode(exitUsage, err)
	}

	journalPath := f.journal
	if f.dryRun {
		dir, err := os.MkdirTemp("", "bulkmail-dry-run-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		journalPath = filepath.Join(dir, "journal")
	}
	// A result or journal in a folder that does not exist is most likely a
	// mistyped path: said before anything is sent, not as a journal error.
	for _, p := range []string{f.result, journalPath} {
		if dir := filepath.Dir(p); !isDir(dir) {
			return usageErr("%s: the folder %s does not exist; nothing sent (create it, or give another path)", p, dir)
		}
	}
	// A sharded journal from before journals recorded their rows was
	// written when shards hashed addresses without Unicode normalisation:
	// resuming it now could move a row into a shard whose journal never saw
	// it, and send it twice.
	journal, err := report.OpenJournal(journalPath, job, report.OpenOptions{Reset: f.journalReset, TemplateEdited: f.templateEdit, RequireRows: shard.count > 1, Boot: env.boot, Reserve: f.journalSync == "batch"})
	switch {
	case errors.Is(err, report.ErrLocked):
		return withCode(exitLocked, fmt.Errorf("%s is in use by another bulkmail run (the journal is locked); nothing sent", journalPath))
	case errors.Is(err, report.ErrListChanged):
		return withCode(exitUsage, fmt.Errorf("%s was written for another list, or for another version of %s (the content differs); --journal-reset starts over and sends EVERY row again (the old journal is kept); to send only new rows, put them in a list of their own, or pass the earlier result as one more --suppress (with your suppression lists)", journalPath, f.list))
	case errors.Is(err, report.ErrRowsUnknown):
		return withCode(exitUsage, fmt.Errorf("the journal %s was written by an earlier bulkmail for a sharded job, and shards now compare addresses in Unicode normal form, so a few rows could change shard and be sent twice; nothing sent. Finish this job with the bulkmail that started it, or --journal-reset to start it over (every row of the shard is sent again; the old journal is kept)", journalPath))
	case errors.Is(err, report.ErrRowsChanged):
		return withCode(exitUsage, fmt.Errorf("the journal %s was written for other recipients of %s (another --sheet, --email-column or --shard, or shards of an earlier bulkmail, which could put a row in another shard); nothing sent. Other recipients need their own --result (or --journal); --journal-reset starts this one over and sends EVERY row (the old journal is kept)", journalPath, f.list))
	case errors.Is(err, report.ErrTemplateChanged):
		what := "another version of the template " + f.template
		if errors.Is(err, report.ErrHTMLChanged) {
			what = "another --html template, or with one where this run has none or the other way round"
		}
		return withCode(exitUsage, fmt.Errorf("the journal %s was written with %s; nothing sent. A new campaign to this list needs its own --result (or --journal), or --journal-reset to start this one over (the old journal is kept); to finish the same campaign with a corrected template, add --template-edited", journalPath, what))
	case err != nil:
		return withCode(exitAborted, err)
	}
	defer journal.Close()
	ids.journal = journal

	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "bulkmail: "+format+"\n", args...) }
	if f.dryRun {
		logf("dry run: rendering and checking every row; nothing will be sent")
	} else if f.url == "" {
		srv, err := capture.Start(capture.Config{Dir: f.outbox})
		if err != nil {
			return withCode(exitAborted, err)
		}
		defer srv.Close()
		cfg = sender.Config{Addr: srv.Addr(), TLS: sender.TLSNone, LocalName: f.helo, Timeouts: f.timeouts}
		logf("no --smtp given: delivering to the built-in capture server at %s; nothing leaves this machine", srv.Addr())
		logf("each message received is written to %s/", f.outbox)
	}
	if f.trace != "" && !f.dryRun {
		trace, closeTrace, err := openTrace(f.trace)
		if err != nil {
			return err
		}
		defer closeTrace()
		cfg.Trace = trace
	}

	// Every worker commits through the journal: its fsyncs gather them.
	journal.SetGroup(f.workers)

	progress := newProgress(stderr)
	defer progress.stop()
	run := &sendRun{
		flags:      f,
		list:       list,
		tmpl:       tmpl,
		journal:    journal,
		ids:        ids,
		only:       only,
		suppressed: suppressed,
		shard:      shard,
		progress:   progress,
		spillDir:   filepath.Dir(journalPath),
	}
	runErr := run.deliver(ctx, cfg, limit, logf)
	progress.stop()
	if err := journal.Sync(); err != nil && runErr == nil {
		runErr = err
	}

	reason := "not attempted"
	switch {
	case errors.Is(runErr, context.Canceled):
		reason = "not attempted: the run was interrupted"
	case runErr != nil:
		reason = "not attempted: " + runErr.Error()
	}
	counts, err := writeResult(f.result, &f.listFlags, journal, shard, reason)
	if err != nil {
		if runErr == nil {
			runErr = withCode(exitAborted, err)
		}
		logf("result file: %v", err)
	} else {
		if f.dryRun {
			logf("%s; results in %s", counts, f.result)
		} else {
			logf("%s; results in %s (journal %s)", counts, f.result, f.journal)
		}
		if run.alreadyDone > 0 || len(only) > 0 || run.exhausted > 0 {
			// The line above counts the whole list; say what this run did.
			progress.mu.Lock()
			if line := progress.counts.String(); line == "0 rows" {
				logf("this run: nothing to send")
			} else {
				logf("this run: %s", line)
			}
			progress.mu.Unlock()
		}
		if run.exhausted > 0 {
			logf("%s not tried again: --max-attempts %d used up", rowsCount(run.exhausted), f.maxAttempts)
		}
		if run.alreadyDone > 0 {
			hint := "--journal-reset starts over and sends them all again"
			if counts.statusCounts[report.Invalid] > 0 {
				hint += "; --only invalid retries the invalid rows, none of which was sent"
			}
			logf("%s settled by an earlier run and not sent again (%s)", rowsCount(run.alreadyDone), hint)
		}
		if n := counts.statusCounts[report.InDoubt]; n > 0 && !f.resendInDoubt {
			logf("%s in_doubt: the message went out but no reply was recorded, so it may have been delivered; not sent again unless you add --resend-in-doubt (the Message-ID is kept)", rowsCount(n))
		}
	}
	if f.url == "" && !f.dryRun {
		logf("nothing left this machine: messages are in %s/", f.outbox)
	}
	if counts.partial > 0 {
		logf("%s reached the main recipient but not every Cc/Bcc: the refused ones are named in the error column and are not retried", rowsCount(counts.partial))
	}
	switch {
	case runErr != nil:
		return classifyRunError(runErr)
	case counts.undelivered() > 0 || counts.partial > 0:
		return &exitError{code: exitUndelivered}
	}
	return nil
}

// classifyRunError gives a stopped run its exit status.
func classifyRunError(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return withCode(exitInterrupted, errors.New("interrupted: the journal and result file are consistent; run the same command again to resume"))
	}
	return withCode(exitAborted, err)
}

// sendRun is one send: the list streaming in, the pool delivering, the
// journal recording.
type sendRun struct {
	flags      *sendFlags
	list       *merge.List
	tmpl       *merge.Template
	journal    *report.Journal
	ids        *messageIDs
	only       map[report.Status]bool
	suppressed suppressions
	shard      shard
	progress   *progress
	spillDir   string // where duplicate detection keeps what outgrows memory

	alreadyDone int
	exhausted   int // rows not tried again: --max-attempts used up
}

// pendingRow is what the journal needs to know about a row whose message
// is with the pool; it travels with the job (sender.Job.Data).
type pendingRow struct {
	email           string
	messageID       string
	earlierAttempts int    // attempts in earlier runs: retries are counted across runs
	note            string // a warning about the row (padded), kept in the result
}

// deliver streams the list into the pool and records every outcome.
func (r *sendRun) deliver(ctx context.Context, cfg sender.Config, limit rate.Limit, logf func(string, ...any)) error {
	f := r.flags
	jobs := make(chan *sender.Job, f.workers)
	produceCtx, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	var produceErr, reserveErr error
	var wg sync.WaitGroup
	merged := jobs
	if r.journal.Reserving() && !f.dryRun {
		// Rows reach the workers through the journal's reservations: one
		// fsync for a batch of rows instead of one per message. The
		// batch is what the producer made while the last one was being
		// reserved, and the workers' queue holds a batch, so that they
		// work through one while the next is reserved.
		batch := reserveBatch(f.workers)
		merged = make(chan *sender.Job, batch)
		jobs = make(chan *sender.Job, batch)
		wg.Go(func() {
			defer close(jobs)
			reserveErr = r.reserve(produceCtx, merged, jobs, batch)
			if reserveErr != nil {
				stopProducing()
			}
		})
	}
	wg.Go(func() {
		defer close(merged)
		produceErr = r.produce(produceCtx, merged, logf)
	})
	if f.dryRun {
		for range jobs {
		}
		wg.Wait()
		return produceErr
	}

	burst := max(f.burst, 1)
	pool := sender.NewPool(sender.PoolConfig{
		Dial:             cfg,
		Workers:          f.workers,
		Limiter:          rate.NewLimiter(limit, burst),
		Retries:          f.retries,
		RetryWait:        f.retryWait,
		RetryMaxWait:     f.retryMaxWait,
		MaxPerConnection: f.maxPerConn,
		MaxErrors:        f.maxErrors,
		Commit: func(j *sender.Job, attempt int) error {
			// Once the grace period is over the journal takes no more
			// commits (StopCommits below), so none goes behind the back
			// of the result being written.
			p := rowOf(j)
			// Attempts count across runs, so a row left in doubt by a crash
			// still knows what --max-attempts has used.
			return r.journal.Committing(j.ID, p.earlierAttempts+attempt, p.email, p.messageID)
		},
		Done: func(res sender.Result) error {
			o := outcomeOf(res, rowOf(res.Job))
			if err := r.record(o, res.Lazy); err != nil {
				return err
			}
			r.progress.add(o.Status)
			return nil
		},
		// A refusal is recorded before the retry waits, or a crash
		// meanwhile would leave the row looking in doubt: its data went
		// out, or (with reservations) it was reserved and nothing since.
		// The record also makes the retry's commit fsynced (see
		// report.Journal.Committing).
		Retrying: func(res sender.Result) error {
			return r.record(outcomeOf(res, rowOf(res.Job)), res.Lazy)
		},
		Flush: func(int) error { return r.journal.Settle() },
		Logf:  logf,
	})

	// The pool stops taking messages when ctx ends; messages on the wire
	// get the grace period to finish, then the run ends without them (they
	// are in the journal as committing, hence in doubt, or not started).
	poolDone := make(chan error, 1)
	go func() { poolDone <- pool.Run(ctx, jobs) }()
	var poolErr error
	select {
	case poolErr = <-poolDone:
	case <-ctx.Done():
		select {
		case poolErr = <-poolDone:
		case <-time.After(f.grace):
			r.journal.StopCommits()
			poolErr = fmt.Errorf("grace period of %s over with messages still on the wire: %w", f.grace, ctx.Err())
		}
	}
	stopProducing()
	go func() {
		for range jobs {
		}
	}()
	wg.Wait()
	if poolErr != nil {
		return poolErr
	}
	if reserveErr != nil {
		return reserveErr
	}
	return produceErr
}

// reserveBatch is how many rows one reservation takes at most: enough
// that its fsync is a small part of the time the workers take to send
// them, few enough that a restart of the machine leaves few rows in
// doubt that never left (see report.Journal): at most two batches and
// two messages a worker. On loopback at 4 workers, 64 rows sent 10% more
// a second than 32, and 128 15% more.
func reserveBatch(workers int) int { return max(128, 8*workers) }

// reserve passes the jobs from in to out, each batch of them (up to n,
// as many as are ready) reserved in the journal first.
func (r *sendRun) reserve(ctx context.Context, in <-chan *sender.Job, out chan<- *sender.Job, n int) error {
	batch := make([]*sender.Job, 0, n)
	rs := make([]report.Reservation, 0, n)
	for job := range in {
		batch = append(batch[:0], job)
	more:
		for len(batch) < n {
			select {
			case j, ok := <-in:
				if !ok {
					break more
				}
				batch = append(batch, j)
			default:
				break more
			}
		}
		rs = rs[:0]
		for _, j := range batch {
			p := rowOf(j)
			rs = append(rs, report.Reservation{Row: j.ID, Email: p.email, MessageID: p.messageID})
		}
		if err := r.journal.Reserve(rs); err != nil {
			return withCode(exitAborted, err)
		}
		for _, j := range batch {
			select {
			case out <- j:
			case <-ctx.Done():
				return nil
			}
		}
	}
	return nil
}

// record puts a message's outcome in the journal. With --journal-sync
// message, a lazy outcome (the worker commits its next message at once,
// see sender.Result.Lazy) is written to the file now but made durable by
// that commit's fsync rather than by one of its own, which halves the
// fsyncs a message costs: issue 5's rule holds, both records of a message
// are on disk before the worker commits another. A killed process loses
// nothing (the kernel has the record); only a machine crash in the moment
// before that commit's fsync turns this one row into in_doubt, never into
// a resend. With --journal-sync batch every outcome is only written, and
// the reservation answers for it after a restart (see report.Journal).
func (r *sendRun) record(o report.Outcome, lazy bool) error {
	if lazy {
		return r.journal.RecordUnsynced(o)
	}
	return r.journal.Record(o)
}

// rowOf returns what produce attached to j.
func rowOf(j *sender.Job) *pendingRow {
	if p, ok := j.Data.(*pendingRow); ok {
		return p
	}
	return &pendingRow{}
}

// produce reads every row and either records why it is not sent (invalid,
// duplicate, suppressed, settled before) or hands its message to the pool.
func (r *sendRun) produce(ctx context.Context, jobs chan<- *sender.Job, logf func(string, ...any)) error {
	const maxWarnings = 20
	warnings := 0
	defer func() {
		if warnings > maxWarnings {
			logf("%d more short rows padded (see the error column of the result)", warnings-maxWarnings)
		}
	}()
	// The first row of every address, in memory that does not grow with
	// the list (see merge.FirstRows).
	seen := merge.NewFirstRows(r.spillDir)
	defer seen.Close()
	// An address belongs first to the row an earlier run tried to send it
	// to. Without this, a row that was invalid then and comes first in the
	// list (fixed since, say by --encoding) would take the address and be
	// sent a second copy of what its later duplicate already received.
	// Only a run that takes invalid or skipped rows again can meet such a
	// row before the one that claimed its address: in any other run the
	// rows are met in list order, and a row an earlier run tried claims
	// its address when it is met (below), so the journal need not be read
	// first (a row a time: seconds for a million rows).
	if r.only[report.Invalid] || r.only[report.Skipped] {
		err := r.journal.Each(func(o report.Outcome) error {
			if !claims(o, true) {
				return nil
			}
			_, err := seen.Add(o.Email, o.Row)
			return err
		})
		if err != nil {
			return withCode(exitAborted, err)
		}
	}
	emailIdx := r.list.EmailIndex()
	for {
		rec, err := r.list.Next()
		if err == io.EOF {
			return nil
		}
		var rowErr *merge.RowError
		if err != nil && !errors.As(err, &rowErr) {
			return withCode(exitAborted, err)
		}
		// A short row is padded and sent; the operator hears of it here and
		// in the result's error column.
		var note string
		if w := r.list.Warning(); w != nil && rowErr == nil && r.shard.contains(rec) {
			note = "warning: " + w.Error()
			if warnings++; warnings <= maxWarnings {
				logf("%s", note)
			}
		}
		if !r.shard.contains(rec) {
			continue
		}
		prev, tried := r.journal.Last(rec.Row)
		// The address a row holds against later duplicates (claims): the
		// list's, or, for a row whose address is not valid now, the one
		// the journal has.
		claimAddr := prev.Email
		if rowErr == nil && rec.Address != "" {
			claimAddr = rec.Address
		}
		if !r.wanted(prev, tried) {
			// A row an earlier run sent (or tried to) keeps its address:
			// a later duplicate that run never reached is skipped, not sent
			// a second copy. So does a row never tried that --only passes
			// over: a later run owes it the message, and a duplicate that
			// --only skipped takes now would make that a second one.
			if !claims(prev, tried) && (tried || len(r.only) == 0 || !r.sendable(rec, rowErr)) {
				continue
			}
			if _, err := seen.Add(claimAddr, rec.Row); err != nil {
				return withCode(exitAborted, err)
			}
			continue
		}
		email := rowEmail(rec, emailIdx)
		settle := func(s report.Status, why string) error {
			if claims(prev, tried) {
				// It keeps its address in this run too, or a later
				// duplicate no run reached would be sent now.
				if _, err := seen.Add(claimAddr, rec.Row); err != nil {
					return err
				}
			}
			if tried && prev.Status == report.InDoubt {
				// --resend-in-doubt took the row, but it is not sent after
				// all: it may still have reached its recipient, and says so.
				r.progress.add(report.InDoubt)
				logf("row %d stays in_doubt, not sent again: %s", rec.Row, why)
				return nil
			}
			r.progress.add(s)
			// Nothing was sent for this row now: no need to wait for the
			// disk. A row tried before keeps its attempts (--max-attempts)
			// and Message-ID: it may have been delivered once (a resend of
			// an in_doubt row that was then deferred), so it keeps its
			// address too (claims).
			o := report.Outcome{Row: rec.Row, Email: email, Status: s, Error: why, Start: time.Now()}
			if tried {
				o.Attempts, o.MessageID = prev.Attempts, prev.MessageID
			}
			return r.journal.Note(o)
		}
		var msg *merge.Message
		switch {
		case rowErr != nil:
			err = settle(report.Invalid, rowErr.Error())
		case r.suppressed.has(rec.Address):
			err = settle(report.Skipped, suppressedReason)
		default:
			msg, err = r.tmpl.Render(rec)
			if errors.As(err, &rowErr) {
				err = settle(report.Invalid, rowErr.Error())
				break
			}
			if err != nil {
				break
			}
			// Only a row that is sent claims its address: a duplicate of
			// an invalid row is the one that gets the message. Duplicates
			// share a shard, so the shard's rows are all that matter.
			var first int
			if first, err = seen.Add(rec.Address, rec.Row); err != nil {
				break
			}
			switch {
			case first != 0 && first != rec.Row:
				err = settle(report.Skipped, fmt.Sprintf("duplicate of row %d", first))
				msg = nil
			case len(msg.To) > 1:
				// A Cc or Bcc the template adds is "never sent to" too: it
				// leaves the envelope (the header still names it), and the
				// row's result says so.
				var dropped []string
				msg.To, dropped = r.suppressed.filter(msg.To)
				if len(dropped) > 0 {
					note = joinNotes(note, suppressedCopiesNote(dropped))
				}
			}
			switch {
			case msg == nil:
			case r.flags.dryRun:
				err = settle(report.Skipped, fmt.Sprintf("dry run: not sent; message of %d octets to %s", len(msg.Data), strings.Join(msg.To, ", ")))
				msg = nil
			}
		}
		if err != nil {
			return withCode(exitAborted, err)
		}
		if msg == nil {
			continue
		}
		job := &sender.Job{
			ID:   rec.Row,
			Msg:  &sender.Message{From: msg.From, To: msg.To, Data: msg.Data, UTF8: msg.UTF8},
			Data: &pendingRow{email: rec.Address, messageID: msg.MessageID, earlierAttempts: prev.Attempts, note: note},
		}
		if m := r.flags.maxAttempts; m > 0 {
			// wanted let the row through, so some of the budget is left.
			job.MaxAttempts = m - prev.Attempts
		}
		select {
		case jobs <- job:
		case <-ctx.Done():
			return nil
		}
	}
}

// sendable reports whether a row never tried would be sent if it were
// taken: its address is valid, not suppressed, and its message renders.
func (r *sendRun) sendable(rec merge.Recipient, rowErr *merge.RowError) bool {
	if rowErr != nil || rec.Address == "" || r.suppressed.has(rec.Address) {
		return false
	}
	_, err := r.tmpl.Render(rec)
	return err == nil
}

// claims reports whether a row whose last state is prev (tried is false
// for a row never reached) holds its address against later duplicates: a
// row that was sent, or tried, holds it, even if it is invalid or skipped
// now (its Message-ID says a message went out for it once); a row that was
// only ever invalid or skipped does not.
func claims(prev report.Outcome, tried bool) bool {
	if !tried || prev.Email == "" {
		return false
	}
	return prev.MessageID != "" || prev.Status != report.Invalid && prev.Status != report.Skipped
}

// wanted reports whether a row is to be tried in this run, given its last
// state in the journal (tried is false for a row never reached, which the
// result shows as failed, "not attempted"). A settled row is never sent
// again and an in-doubt one only when the operator asks; --only narrows
// what is left.
func (r *sendRun) wanted(prev report.Outcome, tried bool) bool {
	status := report.Failed
	if tried {
		status = prev.Status
	}
	exhausted := tried && r.flags.maxAttempts > 0 && prev.Attempts >= r.flags.maxAttempts
	switch {
	case len(r.only) > 0 && status != report.Delivered && status != report.Rejected && (status != report.InDoubt || r.flags.resendInDoubt):
		// Invalid and skipped rows were never sent: --only may take them
		// again, e.g. after a fix made through flags (--encoding). The
		// attempt bound holds here too: --only deferred,failed is what a
		// cron line runs.
		if r.only[status] && exhausted {
			r.exhausted++
			return false
		}
		return r.only[status]
	case len(r.only) > 0:
		return false
	case tried && status.Final():
		r.alreadyDone++
		return false
	case status == report.InDoubt && !r.flags.resendInDoubt:
		return false
	case exhausted:
		// Retries are bounded across runs, not only within one (HAZARDS 33):
		// a cron job must not knock on a refusing server for ever.
		r.exhausted++
		return false
	}
	return true
}

// outcomeOf turns the pool's result into the row's outcome.
func outcomeOf(res sender.Result, p *pendingRow) report.Outcome {
	d := res.Delivery
	o := report.Outcome{
		Row:       res.Job.ID,
		Email:     res.Job.Msg.To[0],
		Status:    report.Status(res.Status),
		Data:      report.Reply(d.Data),
		Attempts:  p.earlierAttempts + res.Attempts,
		MessageID: p.messageID,
		Conn:      res.Conn,
		Start:     res.Start,
		Duration:  res.Duration,
	}
	if len(d.Rcpt) > 0 {
		o.Rcpt = report.Reply(d.Rcpt[0])
	}
	if res.Err != nil {
		o.Error = res.Err.Error()
	}
	if p.note != "" {
		o.Error = strings.TrimPrefix(o.Error+"; "+p.note, "; ")
	}
	return o
}

// messageIDs gives each row its Message-ID. A row tried before keeps the
// id of its first try whatever happened since (in doubt, then deferred on
// a resend, say), so a receiver that deduplicates by Message-ID drops any
// second copy.
type messageIDs struct {
	env     *environment
	journal *report.Journal
}

func (m *messageIDs) forRow(row int) string {
	if m.journal != nil {
		if prev, ok := m.journal.Last(row); ok && prev.MessageID != "" {
			return prev.MessageID
		}
	}
	return m.env.messageID()
}

// jobID says what a run is for (see report.JobID): the list's content,
// which of its sheets, columns and shard give the recipients, and the
// content of the template and of the HTML template. The encoding and delimiter are left out on purpose: fixing them
// (--encoding, then --only invalid) is a resume of the same job.
func jobID(list *merge.List, part shard, template, html string) (report.JobID, error) {
	var id report.JobID
	var err error
	if id.List, err = hashFile(list.Path()); err != nil {
		return id, err
	}
	id.Rows = rowsID(list, part)
	if id.Template, err = hashFile(template); err != nil {
		return id, err
	}
	// The HTML alternative is the message too: another one, or one added
	// or dropped, is another campaign. "-" says there is none, so that a
	// text-only journal is not taken for one too old to know.
	id.HTML = "-"
	if html != "" {
		if id.HTML, err = hashFile(html); err != nil {
			return id, err
		}
	}
	return id, nil
}

// rowsID identifies which recipients a job takes from a list: the sheet,
// the email column's position and the shard (the list's content is
// identified apart).
func rowsID(list *merge.List, part shard) string {
	b := fmt.Appendf(nil, "sheet=%s\x00email=%d", list.Sheet(), list.EmailIndex())
	if part.count > 1 {
		// key=nfc: shards hash AddressKey, which compares local parts in
		// Unicode normal form C since this was added. A sharded journal
		// without it was written when a row could fall in another shard,
		// and is refused as written for other recipients.
		b = fmt.Appendf(b, "\x00shard=%s\x00key=nfc", part)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// hashFile identifies a file by its content.
func hashFile(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func parseStatuses(s string) (map[report.Status]bool, error) {
	if s == "" {
		return nil, nil
	}
	out := map[report.Status]bool{}
	for _, name := range strings.Split(s, ",") {
		st := report.Status(strings.TrimSpace(strings.ToLower(name)))
		if !st.Valid() {
			return nil, usageErr("--only: unknown status %q (want some of %v)", name, report.Statuses())
		}
		out[st] = true
	}
	return out, nil
}

// isDir reports whether path is a folder (or a link to one).
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
