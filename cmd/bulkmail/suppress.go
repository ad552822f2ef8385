package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strings"

	"github.com/bulkmail/bulkmail/internal/merge"
	"github.com/bulkmail/bulkmail/internal/report"
)

// suppressedReason is the error text of a row skipped because its address
// is suppressed; a result file read as --suppress knows those rows by it.
const suppressedReason = "address is on the suppression list"

// suppressions are the addresses never to send to. They are compared
// ignoring case in the local part too, unlike duplicates: for a list of
// people who asked not to be written to, erring towards not sending is the
// right side.
type suppressions map[string]bool

func suppressionKey(addr string) string {
	return strings.ToLower(merge.AddressKey(addr))
}

func (s suppressions) has(addr string) bool {
	return len(s) > 0 && s[suppressionKey(addr)]
}

// filter returns the envelope recipients that are not suppressed, and
// those that are.
func (s suppressions) filter(to []string) (kept, dropped []string) {
	if len(s) == 0 {
		return to, nil
	}
	kept = to[:0:0]
	for _, a := range to {
		if s.has(a) {
			dropped = append(dropped, a)
		} else {
			kept = append(kept, a)
		}
	}
	return kept, dropped
}

// fileList is a flag that may be given several times, each a file.
type fileList []string

func (l *fileList) String() string { return strings.Join(*l, ", ") }

// Set adds path; an empty one (suppress = "" in a job file) adds nothing.
func (l *fileList) Set(path string) error {
	if path != "" {
		*l = append(*l, path)
	}
	return nil
}

// suppressedCopiesNote is the note on a row whose suppressed Cc or Bcc
// addresses were taken off the envelope; a result file read as --suppress
// takes them back from it (suppressedCopies).
func suppressedCopiesNote(addrs []string) string {
	return "not sent to " + strings.Join(addrs, ", ") + ": on the suppression list"
}

// suppressedCopies returns the addresses that suppressedCopiesNote notes
// put in a row's error text. Only whole notes count: the text's parts are
// joined by "; " (see joinNotes and outcomeOf), so a note starts the text
// or follows "; ", and ends it or is followed by "; ". A server's reply
// quoted earlier in the text ("message not sent to this user") is not one.
// The addresses are split as an address list, so a quoted local part with
// ", " in it stays whole.
func suppressedCopies(errText string) []string {
	const head, tail = "not sent to ", ": on the suppression list"
	var out []string
	for i := 0; i < len(errText); {
		j := strings.Index(errText[i:], head)
		if j < 0 {
			break
		}
		start := i + j
		i = start + len(head)
		if start > 0 && !strings.HasSuffix(errText[:start], "; ") {
			continue
		}
		// The note ends at the first tail that ends the text or a part.
		for k := i; ; {
			m := strings.Index(errText[k:], tail)
			if m < 0 {
				break
			}
			end := k + m
			after := errText[end+len(tail):]
			if after == "" || strings.HasPrefix(after, "; ") {
				out = append(out, splitAddresses(errText[i:end])...)
				i = end + len(tail)
				break
			}
			k = end + len(tail)
		}
	}
	return out
}

// splitAddresses splits the ", "-joined addresses of a note, leaving a
// quoted local part ("smith, john"@example.org) whole.
func splitAddresses(s string) []string {
	var out []string
	quoted, escaped, start := false, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case escaped:
			escaped = false
		case c == '\\' && quoted:
			escaped = true
		case c == '"':
			quoted = !quoted
		case !quoted && strings.HasPrefix(s[i:], ", "):
			out = append(out, s[start:i])
			start = i + 2
			i++
		}
	}
	return append(out, s[start:])
}

// readSuppressions reads the addresses never to send to from each of
// paths: a plain file of
// one address a line (a BOM, "#" comments, blank lines and "Name <addr>"
// allowed), a CSV/XLSX with an email column, or an earlier result file.
// An entry that is not an address stops the run before anything is sent
// (exit 2, naming the file and line): a suppression list that is read in
// part is no safeguard.
func readSuppressions(paths ...string) (suppressions, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	out := suppressions{}
	for _, path := range paths {
		if err := out.read(path); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// read adds the addresses of one suppression file to s.
func (s suppressions) read(path string) error {
	add := func(entry string) bool {
		a, _, err := merge.NormalizeAddress(entry)
		if err != nil {
			pa, perr := mail.ParseAddress(entry)
			if perr != nil {
				return false
			}
			if a, _, err = merge.NormalizeAddress(pa.Address); err != nil {
				return false
			}
		}
		s[suppressionKey(a)] = true
		return true
	}
	bad := func(where, entry string) error {
		return withCode(exitUsage, fmt.Errorf("--suppress %s: %s: %q is not an address; fix or remove it (a suppression list must be read whole)", path, where, entry))
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv", ".xlsx", ".tsv":
		l, err := merge.OpenList(path, merge.ListOptions{})
		if err != nil {
			return withCode(exitUsage, fmt.Errorf("--suppress: %w", err))
		}
		defer l.Close()
		if report.IsResultHeader(l.Header()) {
			// An earlier run's result: suppress what a resume would not
			// send again (delivered, rejected, in doubt) and what that run
			// itself suppressed (rows, and Cc/Bcc copies named in a row's
			// note), never the rows it deferred, failed, found invalid or
			// only rehearsed (a dry run), which are still owed their
			// message. (A duplicate's address is its first row's.)
			err := report.ResultOutcomes(path, func(o report.Outcome) error {
				switch {
				case o.Status == report.Delivered, o.Status == report.Rejected, o.Status == report.InDoubt,
					o.Status == report.Skipped && o.Error == suppressedReason:
					if !add(o.Email) {
						return bad(fmt.Sprintf("row %d", o.Row), o.Email)
					}
				}
				if o.Status == report.Invalid || o.Status == report.Skipped {
					// Never handed to the sender: no Cc/Bcc was taken off
					// its envelope, and its error may quote list data.
					return nil
				}
				for _, a := range suppressedCopies(o.Error) {
					if !add(a) {
						return bad(fmt.Sprintf("row %d", o.Row), a)
					}
				}
				return nil
			})
			if err != nil {
				return withCode(exitUsage, fmt.Errorf("--suppress: %w", err))
			}
			return nil
		}
		emailIdx := l.EmailIndex()
		for {
			rec, err := l.Next()
			if err == io.EOF {
				return nil
			}
			var rowErr *merge.RowError
			if err != nil && !errors.As(err, &rowErr) {
				return withCode(exitUsage, fmt.Errorf("--suppress: %w", err))
			}
			cell := strings.TrimSpace(rowEmail(rec, emailIdx))
			if cell == "" {
				continue
			}
			if !add(cell) {
				return bad(fmt.Sprintf("row %d", rec.Row), cell)
			}
		}
	}
	fh, err := os.Open(path)
	if err != nil {
		return withCode(exitUsage, fmt.Errorf("--suppress: %w", err))
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(strings.TrimPrefix(sc.Text(), "\ufeff"))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !add(line) {
			return bad(fmt.Sprintf("line %d", n), line)
		}
	}
	if err := sc.Err(); err != nil {
		return withCode(exitUsage, fmt.Errorf("--suppress %s: %w", path, err))
	}
	return nil
}

// joinNotes joins two notes about a row for its result's error column.
func joinNotes(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
