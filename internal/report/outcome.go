package report

import (
	"fmt"
	"time"
)

// Status is the state of one row. The set is closed: the constants below are
// the only values written to a journal or a result file.
type Status string

// The statuses a row can end a run in.
const (
	Delivered Status = "delivered" // final 2xx to the final dot
	Rejected  Status = "rejected"  // 5xx on RCPT or DATA: final
	Deferred  Status = "deferred"  // 4xx that never succeeded within the run's retries
	Failed    Status = "failed"    // connection-level failure / not attempted / local error; eligible for a re-run
	Invalid   Status = "invalid"   // bad input row, never sent
	Skipped   Status = "skipped"   // duplicate, suppressed, or already done in an earlier run
	InDoubt   Status = "in_doubt"  // final dot sent, no reply: may have been delivered
)

// statuses lists every Status in the order reports show them.
var statuses = [...]Status{Delivered, Rejected, Deferred, Failed, Invalid, Skipped, InDoubt}

// Final reports whether a row with this status is never sent again on resume
// (delivered, rejected, invalid, skipped). InDoubt is not final but is not
// resent unless the operator asks.
func (s Status) Final() bool {
	switch s {
	case Delivered, Rejected, Invalid, Skipped:
		return true
	}
	return false
}

// Valid reports whether s is one of the declared statuses.
func (s Status) Valid() bool {
	return s.index() >= 0
}

// index returns the position of s in statuses, or -1.
func (s Status) index() int {
	for i, v := range statuses {
		if v == s {
			return i
		}
	}
	return -1
}

// Statuses returns every Status in the order reports show them.
func Statuses() []Status {
	return append([]Status(nil), statuses[:]...)
}

// Reply is one SMTP reply as the server sent it.
type Reply struct {
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced,omitempty"` // "2.1.5"
	Text     string `json:"text,omitempty"`     // multi-line replies joined with "\n"
}

// Outcome is what happened to one row.
type Outcome struct {
	Row       int    // row number in the list (header = 1)
	Email     string // envelope recipient
	Status    Status
	Rcpt      Reply // reply to the row's RCPT TO
	Data      Reply // reply to the final dot (or BDAT LAST)
	Attempts  int
	MessageID string
	// Error is a human-readable reason for anything not delivered; for an
	// invalid row it is the input error text.
	Error    string
	Conn     int // which connection (worker id / dial counter) carried the final attempt
	Start    time.Time
	Duration time.Duration
}

// inDoubtError is the Error of the Outcome that Last synthesises for a row
// whose final dot went out in a run that ended before the reply was recorded.
const inDoubtError = "process ended after the final dot was sent; delivery unknown"

// check returns an error if o cannot be recorded.
func (o *Outcome) check() error {
	if o.Row < 1 {
		return fmt.Errorf("report: row %d: row numbers start at 1", o.Row)
	}
	if !o.Status.Valid() {
		return fmt.Errorf("report: row %d: unknown status %q", o.Row, o.Status)
	}
	return nil
}
