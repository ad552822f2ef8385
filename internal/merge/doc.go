// Package merge turns a recipient list and a template into finished messages.
//
// It reads a list row by row (CSV in any common delimiter and charset, or
// XLSX through excelize's streaming row iterator), validates and normalises
// each row's envelope address, and renders one complete RFC 5322 message per
// row in memory. Headers are built in code from the rendered template, so a
// value from the list can never add a header, end the message early or
// change its MIME structure: a CR, LF or NUL that would land in a header makes
// the row invalid (ErrHeaderInjection), and bodies are encoded so that every
// line ends in CRLF, no line passes 998 octets and no line is a lone ".".
//
// The package knows nothing of sockets or SMTP; dot-stuffing is left to the
// transport.
package merge
