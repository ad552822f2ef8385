package sender

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Message is what one transaction carries.
type Message struct {
	From string   // envelope sender, a bare address ("" for the null sender)
	To   []string // envelope recipients; To[0] is the one whose outcome counts
	Data []byte   // the complete message with CRLF line ends, not dot-stuffed
	UTF8 bool     // the envelope has a non-ASCII local part: needs SMTPUTF8
}

// Delivery is every reply one transaction got. A zero Reply means the
// command was never answered (or never sent).
type Delivery struct {
	Mail Reply
	Rcpt []Reply // one per Message.To, in order
	Data Reply   // reply to the final dot or BDAT LAST; or to DATA if refused
	// Committed is true once the end of the message data (the final dot, or
	// BDAT LAST) was written: from then on a lost reply means the message
	// may have been delivered.
	Committed bool
}

// LocalError is a message this connection's server cannot take, found
// before anything was sent (RFC 1870 SIZE, RFC 6531 SMTPUTF8, 8BITMIME).
// It is permanent for this server.
type LocalError struct{ Reason string }

func (e *LocalError) Error() string { return "sender: " + e.Reason }

// CommitError is the commit callback's failure (a journal that could not
// be written): the message was abandoned before its final dot, and the
// connection closed so the server discards it.
type CommitError struct{ Err error }

func (e *CommitError) Error() string { return "sender: before the final dot: " + e.Err.Error() }
func (e *CommitError) Unwrap() error { return e.Err }

// Send carries one message. It sends RSET first on a reused connection.
// Where the server offers PIPELINING, RSET, MAIL, every RCPT and (for one
// recipient) DATA go out in one write and the replies are matched in
// order. commit is called just before the end of the data goes out; if it
// fails, the message is abandoned and the connection closed.
//
// The returned error is nil whenever the server answered every command it
// was sent: refusals are in the Delivery. A *ProtocolError or a 421
// *ReplyError means the connection is gone (see Broken); if
// Delivery.Committed is also true the message is in doubt. A *LocalError
// means nothing was sent and the connection is still good.
func (c *Client) Send(ctx context.Context, m *Message, commit func() error) (Delivery, error) {
	d := Delivery{Rcpt: make([]Reply, len(m.To))}
	if c.broken != nil {
		return d, c.broken
	}
	if len(m.To) == 0 {
		return d, &LocalError{Reason: "message has no recipients"}
	}
	for _, a := range append([]string{m.From}, m.To...) {
		if strings.ContainsAny(a, "<> \t\r\n\x00") {
			return d, &LocalError{Reason: fmt.Sprintf("address %q contains a character SMTP cannot carry", a)}
		}
	}
	params, err := c.mailParams(m)
	if err != nil {
		return d, err
	}
	stop := context.AfterFunc(ctx, c.interrupt)
	defer stop()
	c.txns++
	if c.pipelining() {
		err = c.sendPipelined(m, params, &d, commit)
	} else {
		err = c.sendSequential(m, params, &d, commit)
	}
	if err == nil {
		// A reply nobody asked for means some reply may have been read as
		// another's: nothing on this connection can be trusted (HAZARDS 7).
		if n := c.text.R.Buffered(); n > 0 {
			err = c.fail("after the transaction", fmt.Errorf("%w (%d bytes)", ErrStrayReply, n))
		}
	}
	return d, err
}

func (c *Client) pipelining() bool {
	_, ok := c.ext["PIPELINING"]
	return ok && !c.cfg.NoPipelining
}

func (c *Client) chunking() bool {
	_, ok := c.ext["CHUNKING"]
	return ok && !c.cfg.NoChunking
}

// mailParams checks the message against what the server announced and
// returns the MAIL FROM parameters it needs.
func (c *Client) mailParams(m *Message) (string, error) {
	var params []string
	if v, ok := c.ext["SIZE"]; ok {
		if limit, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && limit > 0 && int64(len(m.Data)) > limit {
			return "", &LocalError{Reason: fmt.Sprintf("message is %d octets, over the server's SIZE limit of %d", len(m.Data), limit)}
		}
		params = append(params, "SIZE="+strconv.Itoa(len(m.Data)))
	}
	if m.UTF8 {
		if _, ok := c.ext["SMTPUTF8"]; !ok {
			return "", &LocalError{Reason: "address has a non-ASCII local part and the server does not offer SMTPUTF8"}
		}
		params = append(params, "SMTPUTF8")
	}
	if has8bit(m.Data) {
		_, utf8ok := c.ext["SMTPUTF8"]
		if _, ok := c.ext["8BITMIME"]; ok {
			params = append(params, "BODY=8BITMIME")
		} else if !(m.UTF8 && utf8ok) {
			return "", &LocalError{Reason: "message has 8-bit data and the server does not offer 8BITMIME"}
		}
	}
	if len(params) == 0 {
		return "", nil
	}
	return " " + strings.Join(params, " "), nil
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// sendSequential is strict lock-step: one command, one reply.
func (c *Client) sendSequential(m *Message, params string, d *Delivery, commit func() error) error {
	t := c.cfg.Timeouts
	if c.txns > 1 {
		if _, err := c.cmd(t.Command, "RSET", "RSET"); err != nil {
			return c.rsetFailed(err)
		}
	}
	r, err := c.cmd(t.Mail, "MAIL FROM", "MAIL FROM:<%s>%s", m.From, params)
	d.Mail = r
	if err := transactionError(err); err != nil || !r.Positive() {
		return err
	}
	for i, to := range m.To {
		r, err := c.cmd(t.Rcpt, "RCPT TO", "RCPT TO:<%s>", to)
		d.Rcpt[i] = r
		if err := transactionError(err); err != nil {
			return err
		}
		if err == nil && r.Code/100 != 2 {
			return c.fail("reading reply to RCPT TO", fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
		}
	}
	if !d.Rcpt[0].Positive() {
		return nil
	}
	return c.sendData(m, d, commit)
}

// transactionError passes on what ends the connection and swallows a
// refusal, which the caller reads from the Delivery.
func transactionError(err error) error {
	var re *ReplyError
	if errors.As(err, &re) && re.Reply.Code != 421 {
		return nil
	}
	return err
}

// rsetFailed: a server that refuses RSET is not in a state we understand.
func (c *Client) rsetFailed(err error) error {
	var re *ReplyError
	if errors.As(err, &re) && re.Reply.Code != 421 {
		return c.fail("RSET", fmt.Errorf("%w: %s", ErrUnexpectedReply, re.Reply))
	}
	return err
}

// sendPipelined writes RSET, MAIL, every RCPT and, for one recipient,
// DATA in one write (RFC 2920 3.1: DATA may end a group), then reads the
// replies in order.
func (c *Client) sendPipelined(m *Message, params string, d *Delivery, commit func() error) error {
	t := c.cfg.Timeouts
	withData := len(m.To) == 1 && !c.chunking()
	rset := c.txns > 1
	var lines []string
	if rset {
		lines = append(lines, "RSET")
	}
	lines = append(lines, fmt.Sprintf("MAIL FROM:<%s>%s", m.From, params))
	for _, to := range m.To {
		lines = append(lines, fmt.Sprintf("RCPT TO:<%s>", to))
	}
	if withData {
		lines = append(lines, "DATA")
	}
	if err := c.writeGroup(lines, t.Mail); err != nil {
		return err
	}
	if rset {
		r, err := c.readReplyTimeout("RSET", t.Command)
		if err != nil {
			return err
		}
		if err := c.check("RSET", r); err != nil {
			return c.rsetFailed(err)
		}
	}
	r, err := c.readReplyTimeout("MAIL FROM", t.Mail)
	if err != nil {
		return err
	}
	d.Mail = r
	if err := transactionError(c.check("MAIL FROM", r)); err != nil {
		return err
	}
	for i := range m.To {
		r, err := c.readReplyTimeout("RCPT TO", t.Rcpt)
		if err != nil {
			return err
		}
		d.Rcpt[i] = r
		if err := transactionError(c.check("RCPT TO", r)); err != nil {
			return err
		}
		if r.Positive() && r.Code/100 != 2 {
			return c.fail("reading reply to RCPT TO", fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
		}
	}
	accepted := d.Mail.Positive() && d.Rcpt[0].Positive()
	if !withData {
		if !accepted {
			return nil
		}
		return c.sendData(m, d, commit)
	}
	r, err = c.readReplyTimeout("DATA", t.DataInit)
	if err != nil {
		return err
	}
	if r.Code != 354 {
		d.Data = r
		if err := transactionError(c.check("DATA", r)); err != nil {
			return err
		}
		if r.Positive() {
			return c.fail("reading reply to DATA", fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
		}
		return nil
	}
	if !accepted {
		// RFC 2920 3.1: the server took DATA though it refused the
		// envelope; end the empty message with a lone dot and read the
		// (negative) reply it owes.
		r, err := c.finish("DATA", nil, t.DataTerm)
		if err != nil {
			return err
		}
		if r.Code/100 == 2 {
			return c.fail("reading reply to end of data", fmt.Errorf("%w: %s to an empty message with no accepted recipient", ErrUnexpectedReply, r))
		}
		return nil
	}
	return c.sendBody(m, d, commit)
}

// sendData starts the data phase after the envelope was accepted: BDAT
// where the server offers CHUNKING, DATA otherwise.
func (c *Client) sendData(m *Message, d *Delivery, commit func() error) error {
	t := c.cfg.Timeouts
	if c.chunking() {
		if err := commit(); err != nil {
			c.fail("before BDAT", err)
			c.conn.Close()
			return &CommitError{Err: err}
		}
		d.Committed = true
		body := normalizeCRLF(make([]byte, 0, len(m.Data)+2), m.Data)
		header := fmt.Sprintf("BDAT %d LAST", len(body))
		c.traceCommand(header)
		c.text.W.WriteString(header + "\r\n")
		r, err := c.finish("BDAT", body, t.DataTerm)
		if err != nil {
			return err
		}
		d.Data = r
		return c.dataReplyError(r)
	}
	r, err := c.cmd(t.DataInit, "DATA", "DATA")
	if err := transactionError(err); err != nil {
		d.Data = r
		return err
	}
	if r.Code != 354 {
		d.Data = r
		if r.Positive() {
			return c.fail("reading reply to DATA", fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
		}
		return nil
	}
	return c.sendBody(m, d, commit)
}

// sendBody sends the dot-stuffed message and its final dot after a 354.
func (c *Client) sendBody(m *Message, d *Delivery, commit func() error) error {
	if err := commit(); err != nil {
		// Closing without the final dot makes the server drop the message.
		c.fail("before the final dot", err)
		c.conn.Close()
		return &CommitError{Err: err}
	}
	d.Committed = true
	body := dotStuff(make([]byte, 0, len(m.Data)+len(m.Data)/64+8), m.Data)
	r, err := c.finish("end of data", body, c.cfg.Timeouts.DataTerm)
	if err != nil {
		return err
	}
	d.Data = r
	return c.dataReplyError(r)
}

// dataReplyError checks the reply to the end of the data: 2xx, 4xx, 5xx
// are answers; a 421 also ends the connection; anything else is out of
// step.
func (c *Client) dataReplyError(r Reply) error {
	if r.Code/100 == 3 {
		return c.fail("reading reply to end of data", fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
	}
	return transactionError(c.check("end of data", r))
}

// finish writes data (if any; a nil body writes a lone dot) and reads the
// reply owed for it. The data and the command before it are flushed in one
// write.
func (c *Client) finish(verb string, body []byte, timeout time.Duration) (Reply, error) {
	if body == nil {
		body = []byte(".\r\n")
	}
	c.trace(">", fmt.Sprintf("[message data, %d octets]", len(body)))
	if err := c.writeChunked(body); err != nil {
		return Reply{}, err
	}
	return c.readReplyTimeout(verb, timeout)
}

// writeChunked writes buffered commands and body with a fresh deadline
// for each block, so a large message on a slow link is not cut off while
// a stalled one still is (RFC 5321 4.5.3.2.5).
func (c *Client) writeChunked(body []byte) error {
	const block = 64 << 10
	for len(body) > 0 {
		n := min(block, len(body))
		if err := c.conn.SetWriteDeadline(time.Now().Add(c.cfg.Timeouts.DataBlock)); err != nil {
			return c.fail("sending message data", err)
		}
		if _, err := c.text.W.Write(body[:n]); err != nil {
			return c.fail("sending message data", err)
		}
		body = body[n:]
	}
	if err := c.text.W.Flush(); err != nil {
		return c.fail("sending message data", err)
	}
	return nil
}

// writeGroup writes several command lines in one write.
func (c *Client) writeGroup(lines []string, timeout time.Duration) error {
	for _, l := range lines {
		if err := validateLine(l); err != nil {
			return err
		}
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return c.fail("sending commands", err)
	}
	for _, l := range lines {
		c.traceCommand(l)
		c.text.W.WriteString(l)
		c.text.W.WriteString("\r\n")
	}
	if err := c.text.W.Flush(); err != nil {
		return c.fail("sending commands", err)
	}
	return nil
}

func (c *Client) readReplyTimeout(verb string, timeout time.Duration) (Reply, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Reply{}, c.fail("reading reply to "+verb, err)
	}
	return c.readReply(verb)
}

// dotStuff appends data to dst as it must go on the wire after DATA:
// every line ending CRLF (a lone CR or LF becomes CRLF, so no bare
// newline can end the data early on a lenient server: SMTP smuggling,
// CVE-2023-51764), NUL removed, a "." at the start of a line doubled
// (RFC 5321 4.5.2), and the final ".\r\n".
func dotStuff(dst, data []byte) []byte {
	return append(wireData(dst, data, true), '.', '\r', '\n')
}

// normalizeCRLF is dotStuff without the stuffing and the final dot, for
// BDAT, which carries the octets as they are (RFC 3030).
func normalizeCRLF(dst, data []byte) []byte {
	return wireData(dst, data, false)
}

// wireData is the one place message data is put into wire form. It ends
// with CRLF even when data does not.
func wireData(dst, data []byte, stuff bool) []byte {
	bol := true
	for i := 0; i < len(data); i++ {
		b := data[i]
		switch b {
		case 0:
			continue
		case '\r', '\n':
			if b == '\r' && i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			dst = append(dst, '\r', '\n')
			bol = true
			continue
		case '.':
			if bol && stuff {
				dst = append(dst, '.')
			}
		}
		dst = append(dst, b)
		bol = false
	}
	if !bol {
		dst = append(dst, '\r', '\n')
	}
	return dst
}
