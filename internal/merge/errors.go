package merge

import (
	"errors"
	"fmt"
	"strconv"
)

// The sentinels below are matched with errors.Is. Their text carries no
// "merge: " prefix because they are always wrapped by an error that has one.
var (
	// ErrMissingColumn: the list lacks a column a template or option needs.
	ErrMissingColumn = errors.New("missing column")
	// ErrDuplicateColumn: a column a template or option needs appears twice
	// in the header (compared case-insensitively), so the value is ambiguous.
	ErrDuplicateColumn = errors.New("duplicate column")
	// ErrNotAddress: a cell or header is not an RFC 5321 mailbox.
	ErrNotAddress = errors.New("not an address")
	// ErrTooManyFields: a row has more non-empty cells than the header.
	ErrTooManyFields = errors.New("more cells than the header has columns")
	// ErrFewFields: a CSV row has fewer cells than the header. The row is
	// padded and sent; Next returns a nil error and List.Warning reports it.
	ErrFewFields = errors.New("fewer cells than the header has columns")
	// ErrHeaderInjection: a CR, LF or NUL in a value that lands in a header.
	ErrHeaderInjection = errors.New("line break or NUL in a header value")
	// ErrNonASCIILocal: the local part of an address is not ASCII. merge never
	// returns it; the sender does when the server lacks SMTPUTF8.
	ErrNonASCIILocal = errors.New("non-ASCII local part needs SMTPUTF8")
	// ErrAttachment: an attachment file is missing, unreadable or too large.
	ErrAttachment = errors.New("attachment")
	// ErrRender: executing the template failed for this row.
	ErrRender = errors.New("render")
	// ErrEncoding: a CSV row is not valid text in the list's charset.
	ErrEncoding = errors.New("not valid UTF-8 (is the list encoding set?)")
	// ErrParse: a CSV row is malformed (for example a stray quote); only that
	// row is lost.
	ErrParse = errors.New("malformed row")
)

// RowError is a problem with one row of a list or with rendering one row.
// The file goes on: the caller reports the row as invalid and continues.
type RowError struct {
	File   string // base name of the list file
	Row    int    // row number as a spreadsheet program shows it
	Column string // "" when not about one column
	Err    error  // wraps one of the package's sentinels
}

// Error reads like `merge: recipients.csv row 12: column "email": not an address: "x@"`.
func (e *RowError) Error() string {
	s := "merge: " + e.File + " row " + strconv.Itoa(e.Row) + ": "
	if e.Column != "" {
		s += "column " + strconv.Quote(e.Column) + ": "
	}
	return s + e.Err.Error()
}

// Unwrap returns the wrapped error, so errors.Is finds the sentinel.
func (e *RowError) Unwrap() error { return e.Err }

// wrapf builds an unprefixed error wrapping sentinel, for use inside RowError.
func wrapf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
