package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned (wrapped) by OpenJournal when another open journal,
// in this process or another, holds the lock on the same file.
var ErrLocked = errors.New("journal is locked by another run")

// ErrListChanged is returned (wrapped) by OpenJournal when the journal was
// written for a list whose content differs from the one now given.
var ErrListChanged = errors.New("journal was written for a different list")

// ErrRowsChanged is returned (wrapped) by OpenJournal when the journal was
// written for the same list read another way: another sheet or another
// email column, so other recipients under the same row numbers.
var ErrRowsChanged = errors.New("journal was written for other recipients of this list (another sheet, email column or shard, or shards of an earlier bulkmail)")

// ErrTemplateChanged is returned (wrapped) by OpenJournal when the journal
// was written for the same recipients with another template: most likely
// another campaign, whose rows are not this one's.
var ErrTemplateChanged = errors.New("journal was written with a different template")

// ErrHTMLChanged is returned (wrapped) by OpenJournal when the journal was
// written with another HTML template, or with one where the run has none
// or the other way round. It wraps ErrTemplateChanged, and
// OpenOptions.TemplateEdited accepts it likewise.
var ErrHTMLChanged = fmt.Errorf("%w: the HTML template was added, removed or changed", ErrTemplateChanged)

// ErrRowsUnknown is returned (wrapped) by OpenJournal, with
// OpenOptions.RequireRows, for a journal written before JobID.Rows was
// kept: it cannot tell how its rows were chosen.
var ErrRowsUnknown = errors.New("journal does not say how its recipients were chosen (written by an earlier bulkmail)")

// JobID says what a journal is for: which list, which of its columns and
// sheets give the recipients, and which message. A journal refuses a run
// for another job (ErrListChanged, ErrRowsChanged, ErrTemplateChanged), so
// that it never takes another list's, another column's or another
// campaign's rows for its own.
type JobID struct {
	List     string // the list file's content, as a SHA-256 hex; required
	Rows     string // how recipients are read from it (sheet, email column, shard)
	Template string // the template's content
	HTML     string // the HTML template's content, or "-" for none
}

// String is the form kept in a journal's run records: List, then the other
// parts that are known, each as ";name=value". The values are hashes, so
// they hold no ';'.
func (id JobID) String() string {
	s := id.List
	if id.Rows != "" {
		s += ";rows=" + id.Rows
	}
	if id.Template != "" {
		s += ";template=" + id.Template
	}
	if id.HTML != "" {
		s += ";html=" + id.HTML
	}
	return s
}

// parseJobID reads String's form. A journal written before JobID had parts
// holds the list alone: its other parts are unknown, and not compared.
func parseJobID(s string) JobID {
	parts := strings.Split(s, ";")
	id := JobID{List: parts[0]}
	for _, p := range parts[1:] {
		switch name, value, _ := strings.Cut(p, "="); name {
		case "rows":
			id.Rows = value
		case "template":
			id.Template = value
		case "html":
			id.HTML = value
		}
	}
	return id
}

// Check returns why a run for want may not use a journal written for id
// (nil if it may); parts either side does not know are not compared.
// OpenJournal checks this itself; report, which only reads a journal,
// asks.
func (id JobID) Check(want JobID, opt OpenOptions) error {
	differs := func(a, b string) bool { return a != "" && b != "" && a != b }
	switch {
	case differs(id.List, want.List):
		return fmt.Errorf("written for list %.12s, this list is %.12s: %w", id.List, want.List, ErrListChanged)
	case id.Rows == "" && opt.RequireRows:
		return ErrRowsUnknown
	case differs(id.Rows, want.Rows):
		return ErrRowsChanged
	case differs(id.Template, want.Template) && !opt.TemplateEdited:
		return ErrTemplateChanged
	case differs(id.HTML, want.HTML) && !opt.TemplateEdited:
		return ErrHTMLChanged
	}
	return nil
}

// OpenOptions are the operator's choices when a journal is opened.
type OpenOptions struct {
	// Reset starts the journal over: an existing one is renamed to
	// path+".old-<timestamp>", whatever it was written for.
	Reset bool
	// TemplateEdited accepts a journal written with another template: the
	// same campaign, resumed after its template was corrected.
	TemplateEdited bool
	// RequireRows refuses an existing journal that does not record how its
	// recipients were chosen (ErrRowsUnknown), for a caller whose way of
	// choosing them has changed since such journals were written.
	RequireRows bool
	// Boot identifies this boot of the machine (BootID), or is empty where
	// there is none. A run's unsynced records are trusted only by a run
	// in the same boot (see Journal).
	Boot string
	// Reserve makes the journal take reservations (Reserve), after which
	// the first commit of a reserved row needs no fsync of its own. It
	// needs a Boot; without, every commit is fsynced before its final dot.
	Reserve bool
}

// BootID returns the kernel's identifier of this boot of the machine
// (Linux's /proc/sys/kernel/random/boot_id), or "" where there is none.
// Two runs that see the same one saw the same page cache: whatever one
// wrote to a file, even without an fsync, the other reads back, because
// only a restart of the machine (a new boot id) loses unsynced writes.
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ErrNotJournal is returned (wrapped) when the file named as a journal does
// not begin with a journal header, or has a damaged record before its last
// line. Such a file is never modified.
var ErrNotJournal = errors.New("not a bulkmail journal")

// journalVersion is written in every run header so a later format can tell
// old journals apart.
const journalVersion = 1

// Record kinds, the "t" field of each line.
const (
	kindRun     = "run"
	kindCommit  = "commit"
	kindOutcome = "outcome"
	kindReserve = "reserve" // rows whose final dot may go out without a commit fsync
	kindEnd     = "end"     // a run that reserved closed with every record durable
	kindGuard   = "guard"   // after reserve records, so that no earlier bulkmail drops them
)

// record is one line of the journal. One struct serves the three kinds so
// that a line can be decoded without first peeking at "t"; fields a kind does
// not use are omitted from its line.
type record struct {
	T         string    `json:"t"`
	Version   int       `json:"v,omitempty"`    // run
	List      string    `json:"list,omitempty"` // run
	Row       int       `json:"row,omitempty"`
	Email     string    `json:"email,omitempty"`
	Status    Status    `json:"status,omitempty"`
	Rcpt      Reply     `json:"rcpt,omitzero"`
	Data      Reply     `json:"data,omitzero"`
	Attempt   int       `json:"attempt,omitempty"` // commit
	Attempts  int       `json:"attempts,omitempty"`
	MessageID string    `json:"mid,omitempty"`
	Error     string    `json:"error,omitempty"`
	Conn      int       `json:"conn,omitempty"`
	Start     time.Time `json:"start,omitzero"` // run, outcome
	At        time.Time `json:"at,omitzero"`    // commit
	Duration  int64     `json:"dur_ns,omitempty"`
	// Last, so that the records of the other kinds keep their shape (and
	// appendRecord's fast encoding): records with these are rare, and go
	// through encoding/json.
	Boot     string        `json:"boot,omitempty"`     // run
	Reserved []Reservation `json:"reserved,omitempty"` // reserve
}

// Reservation names a row about to be handed to the workers, with the
// address and Message-ID its message goes out with (see Journal.Reserve).
type Reservation struct {
	Row       int    `json:"row"`
	Email     string `json:"email,omitempty"`
	MessageID string `json:"mid,omitempty"`
}

// outcome converts a commit or outcome record into the state Last reports.
func (r *record) outcome() Outcome {
	if r.T == kindCommit {
		why := r.Error // set on the commits OpenJournal infers after a restart
		if why == "" {
			why = inDoubtError
		}
		return Outcome{
			Row:       r.Row,
			Email:     r.Email,
			Status:    InDoubt,
			Attempts:  r.Attempt,
			MessageID: r.MessageID,
			Error:     why,
			Start:     r.At,
		}
	}
	return Outcome{
		Row:       r.Row,
		Email:     r.Email,
		Status:    r.Status,
		Rcpt:      r.Rcpt,
		Data:      r.Data,
		Attempts:  r.Attempts,
		MessageID: r.MessageID,
		Error:     r.Error,
		Conn:      r.Conn,
		Start:     r.Start,
		Duration:  time.Duration(r.Duration),
	}
}

// Journal is the durable, append-only record of a job's outcomes. Each
// Committing and Record call is written and fsynced before it returns;
// concurrent calls share one write and one fsync.
//
// A journal opened with OpenOptions.Reserve (and a boot id) can do with
// far fewer fsyncs, by reservation: the rows about to be handed to the workers are
// first recorded in one fsynced "reserve" record (Reserve). The first
// Committing of a reserved row, and every Record, is then only written:
// the kernel has it, so a killed process loses nothing, and a run in the
// same boot reads the journal exactly. Only a restart of the machine can
// lose such records, and a run after one (another boot id) takes every
// reserved row without a record after its reservation as in doubt
// (delivery unknown): that covers every message whose final dot may have
// gone out, at the price of also naming a few dozen rows that were still
// waiting their turn. Any later commit of a row, a retry, is fsynced as
// before, or a retry lost in a restart would be read back as the refusal
// before it.
//
// A Journal from OpenJournal holds an exclusive lock on its file until Close.
// A Journal from ReadJournal is read-only and holds no lock.
type Journal struct {
	path     string
	readOnly bool
	f        *os.File // the journal file: holds the lock, serves Last
	// w receives the appends; it is f except in tests, which swap in a file
	// whose writes fail to exercise the sticky error.
	w *os.File

	// Records go through three stages: pending (in memory), written (in
	// the kernel: a crash of the process no longer loses them) and durable
	// (fsynced: a crash of the machine does not either). Writes happen
	// with mu held, in order; an fsync runs with mu released, so that
	// other callers queue the next batch meanwhile.
	mu      sync.Mutex
	cond    sync.Cond // signalled when an fsync ends or fails
	id      JobID     // of the last run
	idx     rowIndex  // records written to the file
	size    int64     // end of the durable records
	written int64     // end of the written records (>= size)
	pending []byte
	rows    []pendingRow // rows in pending, with their offsets in it
	batch   uint64       // number of the next fsync
	flushed uint64       // highest batch on disk
	syncing bool         // a caller is in fsync (or gathering for one) with mu released
	err     error        // sticky: set by the first failed write or fsync
	closed  bool

	// Group commit: with group > 1 callers committing at once, an fsync
	// waits for them all to join, but never longer than half the time an
	// fsync takes (fsyncTime, a moving average): past that, waiting costs
	// more than a second fsync would.
	group     int
	joined    int  // callers waiting for batch j.batch
	gathering bool // a caller waits in gatherLocked
	fsyncTime time.Duration
	fsyncs    int // how many so far, for tests

	// Reservations (see Reserve).
	boot     string           // this boot's id ("" if unknown)
	reserve  bool             // takes reservations (with a boot)
	reserved map[int]struct{} // reserved rows with no record since: their commit needs no fsync
	reserves bool             // this run reserved: Close marks the end

	commitsStopped bool // see StopCommits
	// restarted holds the rows that a run before a restart of the machine
	// had reserved and that have no record after their reservation: in
	// doubt. OpenJournal writes them down as commits; a read-only journal
	// keeps them here.
	restarted map[int]Outcome
}

type pendingRow struct {
	row int
	off int64
}

// OpenJournal opens or creates the journal at path (mode 0600) and takes an
// exclusive, non-blocking flock on it; if another open journal holds it, the
// error wraps ErrLocked. The kernel drops the lock when its holder exits, so
// no pid file can go stale.
//
// id says what the run is for. An existing journal written for another job
// (see JobID; its last run record counts) returns an error wrapping
// ErrListChanged, ErrRowsChanged or ErrTemplateChanged, unless opt.Reset.
// With opt.Reset, any existing journal (same job or not) is renamed to
// path+".old-<timestamp>" and a fresh one started. A file that is not a
// journal returns an error wrapping ErrNotJournal and is not touched.
//
// Reading an existing journal rebuilds the last state of every row; a torn
// last line (crash mid-write) is ignored and truncated away, everything
// before it kept. Every run appends a "run" header line.
func OpenJournal(path string, id JobID, opt OpenOptions) (*Journal, error) {
	if id.List == "" || strings.Contains(id.String(), "\n") {
		return nil, fmt.Errorf("report: journal %s: bad job id %q", path, id)
	}
	reset := opt.Reset
	f, err := openLocked(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, err
	}
	j, err := load(f, path, false, trustedBoot(path, opt.Boot))
	if err != nil {
		f.Close()
		return nil, err
	}
	if j.id.List != "" && !reset {
		if err := j.id.Check(id, opt); err != nil {
			f.Close()
			return nil, fmt.Errorf("report: journal %s: %w", path, err)
		}
	}
	if reset && j.id.List != "" {
		// Starting over, for a changed list or the same one (a fix made
		// through flags, a campaign sent again): the old journal is kept.
		nf, err := rotate(path, f)
		f.Close()
		if err != nil {
			return nil, err
		}
		f = nf
		j = newJournal(f, path, false, opt.Boot)
	}
	// Truncate the torn tail (if any) before appending, or the next record
	// would be glued to half a line.
	if err := f.Truncate(j.size); err != nil {
		f.Close()
		return nil, fmt.Errorf("report: journal %s: %w", path, err)
	}
	if _, err := f.Seek(j.size, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("report: journal %s: %w", path, err)
	}
	// The journal is 0600 even if an older one was created more open: it
	// holds every recipient address.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("report: journal %s: %w", path, err)
	}
	j.id = id
	// Rows left in doubt by a restart are written down first, in the
	// fsync that carries the run header: the header ends the reservations
	// before it, so that no later run reads them again.
	err = j.recordRestarted()
	if err == nil {
		var line []byte
		line, err = encode(&record{T: kindRun, Version: journalVersion, List: id.String(), Start: time.Now().UTC(), Boot: opt.Boot})
		if err == nil {
			err = j.append(line, 0)
		}
	}
	if err == nil {
		// A new journal's directory entry must be durable too, or a crash
		// could lose the whole file along with its fsynced records.
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	// The rows a failed fsync left in doubt are written down and fsynced
	// with the run header: the mark has served.
	if err := os.Remove(path + unsyncedSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.Close()
		return nil, fmt.Errorf("report: journal %s: %w", path, err)
	}
	j.boot, j.reserve = opt.Boot, opt.Reserve
	return j, nil
}

// ReadJournal opens the journal at path read-only, for inspection (bulkmail
// report --journal). It takes no lock, so it works while a run is writing the
// journal, and sees the records on disk when it was opened. A torn last line
// is ignored but left in place. Committing and Record on the returned
// Journal return errors; Close releases the file.
func ReadJournal(path string) (*Journal, error) {
	return readJournal(path, BootID())
}

// readJournal is ReadJournal as seen from a machine in boot boot.
func readJournal(path, boot string) (*Journal, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := regularFile(f, path); err != nil {
		f.Close()
		return nil, err
	}
	j, err := load(f, path, true, trustedBoot(path, boot))
	if err != nil {
		f.Close()
		return nil, err
	}
	return j, nil
}

// openLocked opens path with flag and takes the exclusive lock on it.
func openLocked(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := regularFile(f, path); err != nil {
		f.Close()
		return nil, err
	}
	// Each open() makes its own open file description, so this also refuses
	// a second journal on the same file inside one process.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("report: journal %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("report: journal %s: flock: %w", path, err)
	}
	// A run with --journal-reset may have moved the file aside between our
	// open and our lock: then we hold the lock of a journal no longer at
	// path, and another run is using the new one.
	held, err1 := f.Stat()
	now, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(held, now) {
		f.Close()
		return nil, fmt.Errorf("report: journal %s was replaced while being opened: %w", path, ErrLocked)
	}
	return f, nil
}

// rotate moves the locked journal f at path aside and returns a new, locked,
// empty journal file at path. The old file keeps its lock until the caller
// closes it, so no other run can slip in and use it meanwhile.
func rotate(path string, f *os.File) (*os.File, error) {
	stamp := time.Now().UTC().Format("20060102T150405Z")
	old := path + ".old-" + stamp
	for i := 2; ; i++ {
		if _, err := os.Lstat(old); errors.Is(err, os.ErrNotExist) {
			break
		}
		old = fmt.Sprintf("%s.old-%s-%d", path, stamp, i)
	}
	if err := os.Rename(path, old); err != nil {
		return nil, fmt.Errorf("report: journal %s: keep old journal: %w", path, err)
	}
	// A failed fsync's mark belongs to the old journal: whoever reads it
	// later must not trust what it wrote unsynced either.
	if err := os.Rename(path+unsyncedSuffix, old+unsyncedSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("report: journal %s: keep old journal's %s mark: %w", path, unsyncedSuffix, err)
	}
	nf, err := openLocked(path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return nil, err
	}
	return nf, nil
}

func newJournal(f *os.File, path string, readOnly bool, boot string) *Journal {
	j := &Journal{path: path, readOnly: readOnly, f: f, w: f, batch: 1, boot: boot}
	j.cond.L = &j.mu
	return j
}

// load reads the journal in f from the start and indexes the last record of
// every row. It sets j.size to the end of the last complete line, and
// j.restarted to the rows a run in another boot than boot left in doubt.
func load(f *os.File, path string, readOnly bool, boot string) (*Journal, error) {
	j := newJournal(f, path, readOnly, boot)
	br := bufio.NewReaderSize(f, 64<<10)
	var (
		acc  []byte
		off  int64
		line int
		// The reservations since the last run header or end mark, when the
		// run that made them was in another boot: only those can have lost
		// records.
		runBoot  string
		reserves []int64
	)
	for {
		b, err := readLine(br, &acc)
		if len(b) > 0 && b[len(b)-1] == '\n' {
			line++
			var r record
			if uerr := decodeRecord(b, &r); uerr != nil || !j.index(&r, off, line) {
				if _, perr := br.Peek(1); perr == io.EOF && line > 1 {
					// A complete but garbled last line: what a crash can
					// leave when the size reached disk before the data.
					// Never the first line: a file that does not start
					// with a header is not ours to truncate.
					break
				}
				if line == 1 {
					return nil, fmt.Errorf("report: journal %s line %d: damaged record: %w", path, line, ErrNotJournal)
				}
				// Records after a damaged one cannot be trusted to have been
				// the last durable state, and dropping them could resend a
				// message: the operator decides. Cutting the file here keeps
				// every record before the damage.
				return nil, fmt.Errorf("report: journal %s line %d (byte %d) is damaged, with records after it: %w; "+
					"the records before it are intact: to keep them and resume, copy the journal aside and cut it with `truncate -s %d %s` "+
					"(rows whose records stood after the damage will then be sent again: check them in the copy first)",
					path, line, off, ErrNotJournal, off, path)
			}
			switch r.T {
			case kindRun:
				runBoot, reserves = r.Boot, nil
			case kindEnd:
				reserves = nil
			case kindReserve:
				if runBoot == "" || runBoot != boot {
					reserves = append(reserves, off)
				}
			}
			off += int64(len(b))
			continue
		}
		if err == io.EOF {
			if len(b) > 0 && off == 0 && !bytes.HasPrefix(b, []byte(`{"t":"run"`)) {
				// A single unterminated line that is not even the start of
				// a header: this is some other file. Leave it alone.
				return nil, fmt.Errorf("report: journal %s: %w", path, ErrNotJournal)
			}
			break // len(b) > 0: the torn tail of a crashed write
		}
		if err != nil {
			return nil, fmt.Errorf("report: journal %s: %w", path, err)
		}
	}
	j.size, j.written = off, off
	if err := j.inferRestarted(reserves); err != nil {
		return nil, err
	}
	return j, nil
}

// reserveRecord bounds the bytes of rows one reserve record lists.
const reserveRecord = 64 << 10

// guardLine follows every group of reserve records (see Reserve): a record
// this bulkmail skips and earlier ones refuse.
var guardLine = []byte(`{"t":"guard"}` + "\n")

// restartError is the Error of a row found in doubt after a restart.
const restartError = "the machine restarted during the run, after this row was reserved for sending; it may have been delivered, or not sent at all"

// inferRestarted sets j.restarted from the reserve records at offsets
// reserves, made by a run in another boot than this one: each row they
// name whose last record stands before its reservation may have had its
// final dot sent, with the commit saying so lost in the restart.
func (j *Journal) inferRestarted(reserves []int64) error {
	for _, off := range reserves {
		r, err := j.readAt(off)
		if err != nil {
			return fmt.Errorf("report: journal %s: %w", j.path, err)
		}
		for _, e := range r.Reserved {
			last, ok := j.idx.get(e.Row)
			if ok && last > off {
				continue // its records after the reservation are on disk
			}
			o := Outcome{Row: e.Row, Email: e.Email, Status: InDoubt, MessageID: e.MessageID, Error: restartError, Attempts: 1}
			if ok {
				prev, err := j.readAt(last)
				if err != nil {
					return fmt.Errorf("report: journal %s: %w", j.path, err)
				}
				p := prev.outcome()
				o.Attempts = p.Attempts + 1
				if o.MessageID == "" {
					o.MessageID = p.MessageID
				}
			}
			if j.restarted == nil {
				j.restarted = make(map[int]Outcome)
			}
			j.restarted[e.Row] = o
		}
	}
	return nil
}

// recordRestarted appends a commit record for every row in j.restarted,
// to be made durable with the next fsync.
func (j *Journal) recordRestarted() error {
	rows := make([]int, 0, len(j.restarted))
	for row := range j.restarted {
		rows = append(rows, row)
	}
	slices.Sort(rows)
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, row := range rows {
		o := j.restarted[row]
		line, err := encode(&record{T: kindCommit, Row: row, Email: o.Email, Attempt: o.Attempts, MessageID: o.MessageID, Error: o.Error, At: time.Now().UTC()})
		if err != nil {
			return err
		}
		j.queueLocked(line, row)
	}
	// Last reads these rows from the file once the run header's append
	// has written them, before OpenJournal returns.
	j.restarted = nil
	return nil
}

// index records r, found at off on line number line, in j. It reports
// whether r is a valid record in its place.
func (j *Journal) index(r *record, off int64, line int) bool {
	if line == 1 {
		if r.T != kindRun || r.List == "" {
			return false
		}
		j.id = parseJobID(r.List)
		return true
	}
	switch r.T {
	case kindRun:
		// The last run's job is the journal's: a run accepted with an
		// edited template makes that template the one to compare with.
		j.id = parseJobID(r.List)
		return r.List != ""
	case kindCommit, kindOutcome:
		if r.Row < 1 {
			return false
		}
		j.idx.set(r.Row, off)
		return true
	case kindReserve:
		for _, e := range r.Reserved {
			if e.Row < 1 {
				return false
			}
		}
		return len(r.Reserved) > 0
	case kindEnd, kindGuard:
		return true
	}
	return false
}

// readLine returns the next line of br including its '\n', or the
// unterminated rest of the input with io.EOF. The slice is valid until the
// next call.
func readLine(br *bufio.Reader, acc *[]byte) ([]byte, error) {
	b, err := br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return b, err
	}
	*acc = append((*acc)[:0], b...)
	for err == bufio.ErrBufferFull {
		if len(*acc) > maxRecord {
			return nil, fmt.Errorf("report: journal line longer than %d bytes: %w", maxRecord, ErrNotJournal)
		}
		b, err = br.ReadSlice('\n')
		*acc = append(*acc, b...)
	}
	return *acc, err
}

// maxRecord bounds one journal line; ours are a few kilobytes at most
// (reply texts are bounded), so anything longer is not our journal.
const maxRecord = 1 << 20

// regularFile refuses a journal that is not a regular file: a device such
// as /dev/zero would be read without end, /dev/full never written.
func regularFile(f *os.File, path string) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("report: journal %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("report: journal %s is not a regular file: %w", path, ErrNotJournal)
	}
	return nil
}

func encode(r *record) ([]byte, error) { return encodeTo(make([]byte, 0, 256), r) }

// encodeTo is encode appending to dst.
func encodeTo(dst []byte, r *record) ([]byte, error) {
	if r.Boot != "" || r.Reserved != nil {
		rc := *r // json gets a copy, so that r need not live on the heap
		b, err := json.Marshal(&rc)
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		return append(append(dst, b...), '\n'), nil
	}
	b, err := appendRecord(dst, r)
	if err != nil {
		return nil, fmt.Errorf("report: row %d: %w", r.Row, err)
	}
	return append(b, '\n'), nil
}

// lineBufs holds the buffers that the records of Committing and of
// outcomes are encoded into, one or two for every message sent:
// queueLocked copies a line into the pending records, after which its
// buffer goes back here.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getLineBuf() *[]byte { return lineBufs.Get().(*[]byte) }

// putLineBuf gives back a buffer from getLineBuf, now holding line.
func putLineBuf(p *[]byte, line []byte) {
	if cap(line) > 64<<10 {
		return // a huge record's buffer is not kept
	}
	*p = line[:0]
	lineBufs.Put(p)
}

// Committing records, durably (written and fsynced before it returns), that
// the message for row is about to be committed (the final dot is about to be
// sent) on attempt n. If the process dies before the matching Record, a later
// run sees the row as InDoubt. After a failed write every call returns that
// error.
//
// The first record of a row since its reservation (Reserve) is only
// written: the reservation stands in for its fsync.
func (j *Journal) Committing(row, attempt int, email, messageID string) error {
	if row < 1 {
		return fmt.Errorf("report: row %d: row numbers start at 1", row)
	}
	buf := getLineBuf()
	line, err := encodeTo(*buf, &record{T: kindCommit, Row: row, Email: email, Attempt: attempt, MessageID: messageID, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	// One hold of the lock from the check to the append: a commit either
	// is in the journal before StopCommits returns or fails.
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return err
	}
	if j.commitsStopped {
		return fmt.Errorf("report: journal %s: row %d: %w", j.path, row, ErrCommitsStopped)
	}
	_, reserved := j.reserved[row]
	mine := j.batch
	j.queueLocked(line, row)
	putLineBuf(buf, line)
	if reserved {
		j.writeLocked()
		return j.err
	}
	return j.waitFlushed(mine)
}

// ErrCommitsStopped is returned (wrapped) by Committing after StopCommits.
var ErrCommitsStopped = errors.New("no more messages may be committed: the run is ending")

// StopCommits makes every later Committing fail with ErrCommitsStopped;
// one that got in before is appended, and the next Sync has it in the
// file. A run that stops waiting for its workers writes its result from
// the journal, and a message committed behind its back would be missing
// from that result.
func (j *Journal) StopCommits() {
	j.mu.Lock()
	j.commitsStopped = true
	j.mu.Unlock()
}

// Record appends the outcome durably (fsync before return). It is safe for
// concurrent use by many workers. After a failed write every call returns
// that error: the caller must stop sending.
//
// In a journal that takes reservations, the outcome is only written, as
// by RecordUnsynced: a restart that loses it leaves the row in doubt,
// never unsent (see Journal).
func (j *Journal) Record(o Outcome) error {
	buf := getLineBuf()
	line, err := outcomeLine(*buf, &o)
	if err != nil {
		return err
	}
	if j.Reserving() {
		err = j.appendLine(line, o.Row, true)
	} else {
		err = j.append(line, o.Row)
	}
	putLineBuf(buf, line) // queued, hence copied, or not at all
	return err
}

// Reserving reports whether the journal takes reservations: whether it
// was opened with OpenOptions.Reserve and a boot id.
func (j *Journal) Reserving() bool { return j.reserve && j.boot != "" && !j.readOnly }

// Reserve records, durably, that the rows in rs are about to be handed to
// the workers, each with the address and Message-ID its message will go
// out with. From then on the first Committing of each needs no fsync of
// its own: after a restart of the machine, a row reserved and without a
// later record reads as in doubt. On a journal that does not take
// reservations (Reserving), Reserve does nothing.
func (j *Journal) Reserve(rs []Reservation) error {
	if !j.Reserving() || len(rs) == 0 {
		return nil
	}
	for _, r := range rs {
		if r.Row < 1 {
			return fmt.Errorf("report: row %d: row numbers start at 1", r.Row)
		}
	}
	// One record per reserveRecord bytes or so, far below maxRecord
	// whatever the batch and the addresses; one fsync for them all.
	// Sized once for them all (a row's entry is under 48 octets beside
	// its address and Message-ID, unless they need escapes): growing from
	// nothing cost an allocation and a copy per doubling.
	est := len(guardLine)
	for _, r := range rs {
		est += 48 + len(r.Email) + len(r.MessageID)
	}
	lines := make([]byte, 0, est)
	for start := 0; start < len(rs); {
		end, size := start, 0
		for end < len(rs) && (end == start || size < reserveRecord) {
			size += 32 + len(rs[end].Email) + len(rs[end].MessageID)
			end++
		}
		lines = appendReserve(lines, rs[start:end])
		start = end
	}
	// An earlier bulkmail takes an unknown last line for the torn tail of
	// a crash and drops it, which would make these rows unsent; a line
	// after it makes such a bulkmail refuse the journal instead.
	lines = append(lines, guardLine...)
	if err := j.append(lines, 0); err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.reserved == nil {
		j.reserved = make(map[int]struct{}, len(rs))
	}
	for _, r := range rs {
		j.reserved[r.Row] = struct{}{}
	}
	j.reserves = true
	return nil
}

// Note appends an outcome without waiting for the disk: for rows that
// never reached a server (invalid, skipped), whose loss in a crash costs
// only their being judged again on resume. The next write (of any
// Record, Committing, WriteOut, Sync or Close) puts it in the file, where
// Last sees it; the next fsync makes it durable.
func (j *Journal) Note(o Outcome) error { return j.appendUnsynced(o, false) }

// RecordUnsynced appends the outcome and writes it to the file at once,
// leaving its fsync to the next Committing, Record or Sync (of any
// caller). Once it returns, the outcome survives the death of the process
// (the kernel has it); only a crash of the machine before that next fsync
// loses it, and then the row reads as in doubt. It is for a worker that
// commits its next message straight away: that commit's fsync carries
// this outcome, one fsync per message instead of two.
//
// In a journal that takes reservations it is Record: written, not synced.
// (Leaving even the write to that commit would save a system call a
// message, and make a delivered row read in doubt after a kill between
// the two.)
func (j *Journal) RecordUnsynced(o Outcome) error {
	if j.Reserving() {
		return j.Record(o)
	}
	return j.appendUnsynced(o, true)
}

// WriteOut writes whatever is appended and not yet written to the file,
// without an fsync: from then on it survives the death of the process.
func (j *Journal) WriteOut() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return err
	}
	j.writeLocked()
	return j.err
}

// Settle makes everything appended as durable as the journal's mode
// promises, for a worker about to wait: written, in a journal that takes
// reservations (they answer for a restart of the machine); written and
// fsynced (Sync) otherwise.
func (j *Journal) Settle() error {
	if j.Reserving() {
		return j.WriteOut()
	}
	return j.Sync()
}

// appendUnsynced appends o without an fsync, writing it to the file at
// once with write (or when a lot is pending).
func (j *Journal) appendUnsynced(o Outcome, write bool) error {
	buf := getLineBuf()
	line, err := outcomeLine(*buf, &o)
	if err != nil {
		return err
	}
	err = j.appendLine(line, o.Row, write)
	putLineBuf(buf, line)
	return err
}

// appendLine appends line, row's record, without an fsync, writing it
// to the file before it returns with write (or when a lot is pending).
func (j *Journal) appendLine(line []byte, row int, write bool) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return err
	}
	j.queueLocked(line, row)
	if write || len(j.pending) >= 1<<18 {
		j.writeLocked()
	}
	return j.err
}

// Sync returns once everything appended so far, notes included, is on
// disk.
func (j *Journal) Sync() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return err
	}
	if len(j.pending) == 0 && j.written == j.size && !j.syncing {
		return nil // everything is durable already
	}
	return j.waitFlushed(j.batch)
}

// outcomeLine appends o's record to dst.
func outcomeLine(dst []byte, o *Outcome) ([]byte, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	return encodeTo(dst, &record{
		T:         kindOutcome,
		Row:       o.Row,
		Email:     o.Email,
		Status:    o.Status,
		Rcpt:      o.Rcpt,
		Data:      o.Data,
		Attempts:  o.Attempts,
		MessageID: o.MessageID,
		Error:     o.Error,
		Conn:      o.Conn,
		Start:     o.Start,
		Duration:  int64(o.Duration),
	})
}

// append adds line to the batch being collected and returns once that batch
// is on disk. The first caller to find no write in progress writes the whole
// batch — its own line and everyone else's — with one write and one fsync,
// while later callers collect the next batch. row is indexed once the line is
// written; 0 means the line is not a row's.
func (j *Journal) append(line []byte, row int) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return err
	}
	mine := j.batch
	j.queueLocked(line, row)
	return j.waitFlushed(mine)
}

// queueLocked adds line, row's record (0: no row's), to the records
// waiting to be written; call with j.mu held. Any record of a row ends its
// reservation: only the first may stand without an fsync of its own (see
// Committing).
func (j *Journal) queueLocked(line []byte, row int) {
	if row > 0 {
		j.rows = append(j.rows, pendingRow{row, int64(len(j.pending))})
		delete(j.reserved, row)
	}
	j.pending = append(j.pending, line...)
}

// SetGroup tells the journal that n callers (the workers) commit
// concurrently, so that each fsync can wait for all of them to join it
// rather than leave most for the next: with few workers, alternate fsyncs
// otherwise carry one record and three. It waits at most half an fsync's
// time; n <= 1 never waits.
func (j *Journal) SetGroup(n int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.group = n
	j.cond.Broadcast() // a gathering fsync may now have all it waits for
}

// usable reports why nothing may be appended; call with j.mu held.
func (j *Journal) usable() error {
	switch {
	case j.err != nil:
		return j.err
	case j.readOnly:
		return fmt.Errorf("report: journal %s: opened read-only", j.path)
	case j.closed:
		return fmt.Errorf("report: journal %s: closed", j.path)
	}
	return nil
}

// waitFlushed returns once batch mine is on disk, syncing it itself when
// no fsync is in progress; call with j.mu held.
func (j *Journal) waitFlushed(mine uint64) error {
	if mine == j.batch {
		j.joined++
		if j.gathering && j.joined >= j.group {
			j.cond.Broadcast() // the last one the gathering fsync waits for
		}
	}
	for j.flushed < mine {
		if j.err != nil {
			return j.err
		}
		if j.syncing {
			j.cond.Wait()
			continue
		}
		if len(j.pending) == 0 && j.written == j.size {
			// Everything appended is durable already, mine included (an
			// fsync that ended, or Close, made it so).
			return nil
		}
		j.flushLocked()
	}
	return j.err
}

// writeLocked writes the pending records to the file, without an fsync;
// call with j.mu held. A failed write sets the sticky error.
func (j *Journal) writeLocked() {
	if len(j.pending) == 0 || j.err != nil {
		return
	}
	if _, err := j.w.Write(j.pending); err != nil {
		// Sticky: how much reached the file is unknown, and pretending
		// otherwise could send a message twice.
		j.err = fmt.Errorf("report: journal %s: %w", j.path, err)
		j.cond.Broadcast()
		return
	}
	// Last reads what is written: this process sees it, and so does any
	// later run in this boot; a run after a restart judges for itself
	// what survived (see Journal).
	for _, r := range j.rows {
		if r.row > 0 {
			j.idx.set(r.row, j.written+r.off)
		}
	}
	j.written += int64(len(j.pending))
	j.pending, j.rows = j.pending[:0], j.rows[:0]
	if cap(j.pending) > 1<<20 {
		j.pending = nil // do not pin a huge buffer
	}
}

// flushLocked writes the pending records and fsyncs the file as batch
// j.batch. It is called with j.mu held and no fsync in progress, and
// releases j.mu during the fsync so that other callers can queue the next
// batch (and write records that need no fsync of their own).
func (j *Journal) flushLocked() {
	// Whatever happens, those waiting must look again: a failure, even
	// one set by Last while this gathered, must not leave them asleep.
	defer j.cond.Broadcast()
	j.gatherLocked()
	n := j.batch
	j.batch++
	j.joined = 0
	j.writeLocked()
	if j.err != nil {
		return
	}
	// What is written now is what this fsync makes durable; records
	// written while it runs wait for the next.
	end := j.written
	j.syncing = true
	j.mu.Unlock()

	start := time.Now()
	err := j.w.Sync()

	j.mu.Lock()
	j.syncing = false
	j.fsyncs++
	if d := time.Since(start); j.fsyncTime == 0 {
		j.fsyncTime = d
	} else {
		j.fsyncTime += (d - j.fsyncTime) / 8
	}
	if err != nil {
		j.err = fmt.Errorf("report: journal %s: %w", j.path, err)
		if j.boot != "" && !j.readOnly {
			// Whatever this run's mode, and even for the run header's
			// fsync, whose failure may be the one a killed batch run's
			// write-back left to report. After a failed write-back the kernel may drop the pages it
			// could not write: what this boot reads back is no longer
			// what was written, and the next run must judge the
			// reservations as after a restart. Best effort: the disk may
			// take nothing more.
			_ = os.WriteFile(j.path+unsyncedSuffix, []byte(j.boot+"\n"), 0o600)
		}
	} else {
		j.size = end
		j.flushed = n
	}
}

// unsyncedSuffix names the file beside a journal that says an fsync of
// it failed: until a run has settled it, no one trusts what the journal's
// boot wrote without an fsync.
const unsyncedSuffix = ".unsynced"

// trustedBoot is the boot whose unsynced records a reader of the journal
// at path may trust: boot, unless an fsync of the journal failed.
func trustedBoot(path, boot string) string {
	if _, err := os.Lstat(path + unsyncedSuffix); err == nil {
		return ""
	}
	return boot
}

// gatherLocked waits, before an fsync, for the callers expected to join
// it (see SetGroup), at most half an fsync's time; call with j.mu held and
// no fsync in progress. Callers arriving meanwhile queue for this fsync.
func (j *Journal) gatherLocked() {
	wait := j.fsyncTime / 2
	// With reservations the workers' commits take no fsync: none would
	// come to join.
	if j.group <= 1 || j.joined >= j.group || wait <= 0 || j.closed || j.Reserving() {
		return
	}
	j.syncing = true // others wait on cond instead of starting an fsync
	expired := false
	t := time.AfterFunc(wait, func() {
		j.mu.Lock()
		expired = true
		j.cond.Broadcast()
		j.mu.Unlock()
	})
	j.gathering = true
	for j.joined < j.group && !expired && j.err == nil {
		j.cond.Wait()
	}
	t.Stop()
	j.gathering = false
	j.syncing = false
}

// Last returns the latest known state of a row from this and earlier runs: a
// recorded Outcome, or for a row whose last record is a Committing without an
// outcome, an Outcome with Status InDoubt. ok is false if the row was never
// touched.
//
// If the record cannot be read back from disk, Last returns an InDoubt
// Outcome whose Error says why (so that the row is not resent), and the
// journal's sticky error is set so that the next Record stops the run.
func (j *Journal) Last(row int) (Outcome, bool) {
	j.mu.Lock()
	if o, ok := j.restarted[row]; ok {
		j.mu.Unlock()
		return o, true
	}
	off, ok := j.idx.get(row)
	j.mu.Unlock()
	if !ok {
		return Outcome{}, false
	}
	// The buffer comes from a pool and the record stays on the stack:
	// each used to be allocated, for every lookup.
	s := lastScratchPool.Get().(*lastScratch)
	defer lastScratchPool.Put(s)
	var rec record
	r := &rec
	err := j.readInto(off, &s.buf, &s.unescape, r)
	if err == nil && r.Row != row {
		err = fmt.Errorf("record at offset %d is for row %d", off, r.Row)
	}
	if err != nil {
		err = fmt.Errorf("report: journal %s: row %d: %w", j.path, row, err)
		j.mu.Lock()
		if j.err == nil && !j.readOnly {
			j.err = err
			j.cond.Broadcast() // waiters must see it
		}
		j.mu.Unlock()
		return Outcome{Row: row, Status: InDoubt, Error: err.Error()}, true
	}
	return r.outcome(), true
}

// lastScratch is the memory one Last needs: a read buffer that most
// records fit in.
type lastScratch struct {
	buf      [1024]byte
	unescape []byte // decodeRecordIn's scratch
}

var lastScratchPool = sync.Pool{New: func() any { return new(lastScratch) }}

// readAt decodes the record that starts at off.
func (j *Journal) readAt(off int64) (*record, error) {
	var small [1024]byte
	var r record
	if err := j.readInto(off, &small, nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// readInto decodes the record that starts at off into r, with small as
// the buffer of its first read and unescape as decodeRecordIn's scratch.
func (j *Journal) readInto(off int64, small *[1024]byte, unescape *[]byte, r *record) error {
	// Most records fit in one small read; the result file makes one a row.
	n, err := j.f.ReadAt(small[:], off)
	if i := bytes.IndexByte(small[:n], '\n'); i >= 0 {
		return decodeRecordIn(small[:i+1], "", unescape, r)
	}
	if err != nil && err != io.EOF {
		return err
	}
	br := bufio.NewReaderSize(io.NewSectionReader(j.f, off, 1<<62), 1024)
	var acc []byte
	b, err := readLine(br, &acc)
	if err != nil {
		return err
	}
	return decodeRecordIn(b, "", unescape, r)
}

// Job returns the job the journal's last run was for (zero for an empty
// journal opened with ReadJournal).
func (j *Journal) Job() JobID {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.id
}

// Len returns the number of rows the journal has a record for.
func (j *Journal) Len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := j.idx.n
	for row := range j.restarted {
		if _, ok := j.idx.get(row); !ok {
			n++
		}
	}
	return n
}

// Each calls fn with the last state (as Last returns it) of every row the
// journal has a record for, in row order, and stops at the first error fn
// returns, returning it. Rows recorded while Each runs may or may not be
// seen. The outcomes' strings share one string per few hundred rows (see
// LastBatch): fn must copy any it keeps, or it keeps them all.
func (j *Journal) Each(fn func(Outcome) error) error {
	j.mu.Lock()
	rows := j.idx.rows()
	for row := range j.restarted {
		if _, ok := j.idx.get(row); !ok {
			rows = append(rows, row)
		}
	}
	j.mu.Unlock()
	slices.Sort(rows)
	// A few hundred rows at a time, read with LastBatch.
	const batch = 256
	out := make([]Outcome, min(len(rows), batch))
	found := make([]bool, len(out))
	for len(rows) > 0 {
		n := min(len(rows), batch)
		j.LastBatch(rows[:n], out[:n], found[:n])
		for i := range n {
			if err := fn(out[i]); err != nil {
				return err
			}
		}
		rows = rows[n:]
	}
	return nil
}

// Close waits for pending records to be written, then closes the file and
// releases the lock. It returns the journal's sticky error, if any.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	flush := func() {
		for (j.syncing || len(j.pending) > 0 || j.written > j.size) && j.err == nil {
			if j.syncing {
				j.cond.Wait()
				continue
			}
			j.flushLocked()
		}
	}
	flush()
	if j.reserves && j.err == nil {
		// Everything before the mark is durable, by the fsync above: a
		// run after a restart need not doubt this run's reservations.
		line, _ := encode(&record{T: kindEnd})
		j.queueLocked(line, 0)
		flush()
	}
	err := j.err
	j.mu.Unlock()
	if j.w != j.f {
		j.w.Close()
	}
	if cerr := j.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("report: journal %s: %w", j.path, cerr)
	}
	return err
}

// syncDir fsyncs a directory so that a file created or renamed in it
// survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("report: sync %s: %w", dir, err)
	}
	return nil
}

// denseRows bounds the row numbers kept in rowIndex's pages: 8 bytes each, so
// a list of a million rows costs 8 MB. Larger row numbers go in a map.
const denseRows = 1 << 24

// indexPage is how many rows one page of rowIndex covers (512 KB). Pages
// are allocated as rows reach them and never copied, so the index grows
// without the transient doubling of a growing slice.
const indexPage = 1 << 16

// rowIndex maps a row number to the offset of its last record in the file.
type rowIndex struct {
	pages  [][]int64 // offset+1 by row, a page per indexPage rows; 0 means no record
	sparse map[int]int64
	n      int
}

func (x *rowIndex) set(row int, off int64) {
	if row < denseRows {
		p := row / indexPage
		if p >= len(x.pages) {
			x.pages = append(x.pages, make([][]int64, p+1-len(x.pages))...)
		}
		if x.pages[p] == nil {
			x.pages[p] = make([]int64, indexPage)
		}
		slot := &x.pages[p][row%indexPage]
		if *slot == 0 {
			x.n++
		}
		*slot = off + 1
		return
	}
	if x.sparse == nil {
		x.sparse = make(map[int]int64)
	}
	if _, ok := x.sparse[row]; !ok {
		x.n++
	}
	x.sparse[row] = off
}

func (x *rowIndex) get(row int) (int64, bool) {
	if row < 1 {
		return 0, false
	}
	if row < denseRows {
		p := row / indexPage
		if p >= len(x.pages) || x.pages[p] == nil || x.pages[p][row%indexPage] == 0 {
			return 0, false
		}
		return x.pages[p][row%indexPage] - 1, true
	}
	off, ok := x.sparse[row]
	return off, ok
}

// rows returns the indexed row numbers in ascending order.
func (x *rowIndex) rows() []int {
	out := make([]int, 0, x.n)
	for p, page := range x.pages {
		for i, v := range page {
			if v != 0 {
				out = append(out, p*indexPage+i)
			}
		}
	}
	sparse := make([]int, 0, len(x.sparse))
	for row := range x.sparse {
		sparse = append(sparse, row)
	}
	slices.Sort(sparse)
	return append(out, sparse...)
}
