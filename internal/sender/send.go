package sender

import (
	"bytes"
	"context"
	"encoding/binary"
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
	// the last octet of BDAT LAST) was handed to the network: from then on
	// a lost reply means the message may have been delivered.
	Committed bool
}

// LocalError is a message this connection's server cannot take, found
// before anything was sent (RFC 1870 SIZE, RFC 6531 SMTPUTF8, 8BITMIME,
// RFC 5321 4.5.3.1.6 line length). It is permanent for this server.
type LocalError struct{ Reason string }

func (e *LocalError) Error() string { return "sender: " + e.Reason }

// CommitError is the commit callback's failure (a journal that could not
// be written): the message was abandoned before its final dot, and the
// connection closed so the server discards it.
type CommitError struct{ Err error }

func (e *CommitError) Error() string { return "sender: before the final dot: " + e.Err.Error() }
func (e *CommitError) Unwrap() error { return e.Err }

// maxLine is the longest line SMTP carries, CRLF excluded (RFC 5321
// 4.5.3.1.6).
const maxLine = 998

// envelope is one transaction's commands, as prepared and (when
// pipelined) as written: the replies are read back in the same shape.
type envelope struct {
	m        *Message
	params   string // MAIL FROM parameters, with a leading space
	size     int    // octets of the message on the wire before dot-stuffing
	rset     bool   // RSET goes first: the connection was used before
	withData bool   // DATA ends the pipelined group
	written  bool   // the commands are in the write buffer or on the wire
	// For an envelope SendThen sent ahead: its replies, read already, so the
	// next Send goes on from there.
	replies Delivery
	read    bool
}

// Send carries one message. It sends RSET first on a reused connection.
// Where the server offers PIPELINING, RSET, MAIL, every RCPT and (for one
// recipient, without CHUNKING) DATA go out in one write and the replies are
// matched in order. commit is called just before the end of the data goes
// out; if it fails, the message is abandoned and the connection closed.
//
// The returned error is nil whenever the server answered every command it
// was sent: refusals are in the Delivery. A *ProtocolError or a 421
// *ReplyError means the connection is gone (see Broken); if
// Delivery.Committed is also true the message is in doubt. A *LocalError
// means nothing was sent and the connection is still good.
func (c *Client) Send(ctx context.Context, m *Message, commit func() error) (Delivery, error) {
	return c.SendThen(ctx, m, commit, nil)
}

// SendThen is Send with a look-ahead for PIPELINING: just before the final
// dot is written, next is called; if it returns a message the server can
// take, that message's RSET, MAIL, RCPT and DATA go out in the same write
// as the dot (RFC 2920 3.1 lets message content lead a command group), so
// a connection carries one message per round trip. The caller must then
// pass that message to the next Send or SendThen on this client (Queued
// tells whether it was taken). If the connection fails, the queued message
// was never committed and may be tried again anywhere.
//
// The replies to the envelope sent ahead are read before SendThen returns:
// if they are out of step with the commands, the reply to this message's
// final dot may be someone else's, and SendThen returns the error, which
// makes this message in doubt.
func (c *Client) SendThen(ctx context.Context, m *Message, commit func() error, next func() *Message) (Delivery, error) {
	d := Delivery{Rcpt: make([]Reply, len(m.To))}
	if c.broken != nil {
		return d, c.broken
	}
	env := c.queued
	c.queued = nil
	if env != nil && env.m != m {
		return d, c.fail("sending", errors.New("the message given is not the one whose envelope was already sent"))
	}
	if env == nil {
		var err error
		if env, err = c.prepare(m); err != nil {
			return d, err
		}
	}
	if ctx.Done() != nil { // else ctx is never cancelled: nothing to watch
		stop := context.AfterFunc(ctx, c.interrupt)
		defer stop()
	}
	var err error
	if c.pipelining() {
		err = c.sendPipelined(env, &d, commit, next)
	} else {
		err = c.sendSequential(env, &d, commit)
	}
	if err == nil && c.queued == nil {
		// A reply nobody asked for means some reply may have been read as
		// another's: nothing on this connection can be trusted (HAZARDS 7).
		if n := c.text.R.Buffered(); n > 0 {
			err = c.fail("after the transaction", fmt.Errorf("%w (%d bytes)", ErrStrayReply, n))
		}
	}
	if err == nil && c.queued == nil && !d.Committed {
		// A refusal is final for the row, so it must be the server's answer
		// to this row and not a stray that arrived just in time: one NOOP
		// shows whether replies and commands are still in step.
		err = c.confirmInStep()
	}
	return d, err
}

// confirmInStep sends NOOP and expects its 250 and nothing after it. A
// stray reply earlier in the transaction shows here as a reply of the
// wrong kind (the one the last command really got): the transaction's
// replies cannot be trusted, and the connection is broken.
func (c *Client) confirmInStep() error {
	if err := c.checkIdle(); err != nil {
		return err
	}
	if err := validateLine("NOOP"); err != nil {
		return err
	}
	c.traceCommand("NOOP")
	c.text.W.WriteString("NOOP\r\n")
	if err := c.flush(c.cfg.Timeouts.Command, "sending NOOP"); err != nil {
		return err
	}
	r, err := c.readReplyTimeout("NOOP", c.cfg.Timeouts.Command)
	if err != nil {
		return err
	}
	if r.Code/100 != 2 {
		if r.Code == 421 {
			c.broken = &ReplyError{Command: "NOOP", Reply: r}
			return nil // the answers before it stand; only the connection ends
		}
		return c.fail("confirming the replies", fmt.Errorf("%w: %s to NOOP", ErrUnexpectedReply, r))
	}
	if n := c.text.R.Buffered(); n > 0 {
		return c.fail("confirming the replies", fmt.Errorf("%w (%d bytes)", ErrStrayReply, n))
	}
	return nil
}

// Queued returns the message whose envelope SendThen sent ahead, or nil.
func (c *Client) Queued() *Message {
	if c.queued == nil {
		return nil
	}
	return c.queued.m
}

// QueuedReady reports whether the envelope sent ahead is answered and
// accepted in full, so that the next SendThen goes straight to its commit
// without waiting for the server.
func (c *Client) QueuedReady() bool {
	e := c.queued
	if e == nil || !e.read || c.broken != nil {
		return false
	}
	r := e.replies
	if !r.Mail.Positive() || len(r.Rcpt) == 0 || !r.Rcpt[0].Positive() {
		return false
	}
	if e.withData {
		return r.Data.Code == 354
	}
	return c.chunking() // else DATA still has to be sent and answered
}

// prepare checks a message against what the server announced and counts
// it as a transaction on this connection.
func (c *Client) prepare(m *Message) (*envelope, error) {
	if len(m.To) == 0 {
		return nil, &LocalError{Reason: "message has no recipients"}
	}
	for i := -1; i < len(m.To); i++ {
		a := m.From
		if i >= 0 {
			a = m.To[i]
		}
		if strings.ContainsAny(a, "<> \t\r\n\x00") {
			return nil, &LocalError{Reason: fmt.Sprintf("address %q contains a character SMTP cannot carry", a)}
		}
	}
	size, longest := wireSize(m.Data)
	if longest > maxLine {
		return nil, &LocalError{Reason: fmt.Sprintf("message has a line of %d octets; SMTP allows %d (RFC 5321 4.5.3.1.6)", longest, maxLine)}
	}
	env := &envelope{m: m, size: size}
	params, err := c.mailParams(env)
	if err != nil {
		return nil, err
	}
	env.params = params
	// RSET before every transaction but the first on a connection (and
	// after any command sent through Command), so a reused connection never
	// meets "503 sender already specified" (smtppool#8).
	env.rset = c.txns > 0 || c.used
	env.withData = len(m.To) == 1 && !c.chunking()
	c.txns++
	c.used = false
	return env, nil
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
func (c *Client) mailParams(env *envelope) (string, error) {
	var params []string
	m := env.m
	if v, ok := c.ext["SIZE"]; ok {
		// RFC 1870: the size as transmitted, CRLF pairs counted, before
		// dot-stuffing.
		if limit, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && limit > 0 && int64(env.size) > limit {
			return "", &LocalError{Reason: fmt.Sprintf("message is %d octets, over the server's SIZE limit of %d", env.size, limit)}
		}
		params = append(params, "SIZE="+strconv.Itoa(env.size))
	}
	_, utf8ok := c.ext["SMTPUTF8"]
	if m.UTF8 {
		if !utf8ok {
			return "", &LocalError{Reason: "address has a non-ASCII local part and the server does not offer SMTPUTF8"}
		}
		params = append(params, "SMTPUTF8")
	}
	if has8bit(m.Data) {
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
	// Eight octets at a time: any high bit set.
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// sendSequential is strict lock-step: one command, one reply.
func (c *Client) sendSequential(env *envelope, d *Delivery, commit func() error) error {
	t := c.cfg.Timeouts
	m := env.m
	if env.rset {
		if err := c.rset(); err != nil {
			return err
		}
	}
	r, err := c.cmd(t.Mail, "MAIL FROM", "MAIL FROM:<%s>%s", m.From, env.params)
	d.Mail = r
	if err := c.envelopeReply("MAIL FROM", r, err); err != nil || !r.Positive() {
		return err
	}
	for i, to := range m.To {
		r, err := c.cmd(t.Rcpt, "RCPT TO", "RCPT TO:<%s>", to)
		d.Rcpt[i] = r
		if err := c.envelopeReply("RCPT TO", r, err); err != nil {
			return err
		}
	}
	if !d.Rcpt[0].Positive() {
		return nil
	}
	return c.sendData(env, d, commit, nil)
}

// rset sends RSET alone.
func (c *Client) rset() error {
	r, err := c.cmd(c.cfg.Timeouts.Command, "RSET", "RSET")
	return c.rsetReply(r, err)
}

// rsetReply judges a reply to RSET: anything but a 2xx leaves the
// connection in a state we do not understand.
func (c *Client) rsetReply(r Reply, err error) error {
	var re *ReplyError
	switch {
	case err == nil && r.Code/100 == 2:
		return nil
	case err == nil:
		return c.fail("reading reply to RSET", fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
	case errors.As(err, &re) && re.Reply.Code != 421:
		return c.fail("reading reply to RSET", fmt.Errorf("%w: %s", ErrUnexpectedReply, re.Reply))
	}
	return err
}

// envelopeReply judges a reply to MAIL or RCPT: a 2xx, 4xx or 5xx is an
// answer (the Delivery keeps it); a 421 or a failure ends the connection;
// a 3xx is out of step.
func (c *Client) envelopeReply(verb string, r Reply, err error) error {
	var re *ReplyError
	switch {
	case err == nil && r.Code/100 == 2:
		return nil
	case err == nil:
		return c.fail("reading reply to "+verb, fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
	case errors.As(err, &re) && re.Reply.Code != 421:
		return nil
	}
	return err
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

// outOfStep reports errors that mean replies and commands no longer
// match: every reply read on the connection before it is suspect too.
func outOfStep(err error) bool {
	return errors.Is(err, ErrUnexpectedReply) || errors.Is(err, ErrMalformedReply) || errors.Is(err, ErrStrayReply)
}

// sendPipelined writes RSET, MAIL, every RCPT and, for one recipient,
// DATA in one write (RFC 2920 3.1: DATA may end a group), then reads the
// replies in order. When SendThen sent the envelope ahead and read its
// replies, it goes on from there.
func (c *Client) sendPipelined(env *envelope, d *Delivery, commit func() error, next func() *Message) error {
	if env.read {
		*d = env.replies
	} else {
		if !env.written {
			if err := c.checkIdle(); err != nil {
				return err
			}
			c.text.W.Write(c.appendEnvelope(nil, env))
			if err := c.flush(c.cfg.Timeouts.Mail, "sending commands"); err != nil {
				return err
			}
		}
		if err := c.readEnvelope(env, d); err != nil {
			return err
		}
	}
	accepted := d.Mail.Positive() && d.Rcpt[0].Positive()
	switch {
	case !env.withData && !accepted:
		return nil
	case !env.withData:
		return c.sendData(env, d, commit, next)
	case d.Data.Code != 354:
		return nil // DATA refused: readEnvelope kept the reply
	case !accepted:
		// RFC 2920 3.1: the server took DATA though it refused the
		// envelope; end the empty message with a lone dot and read the
		// (negative) reply it owes.
		if _, err := c.writeData([]byte(".\r\n"), 0); err != nil {
			return err
		}
		r, err := c.readReplyTimeout("end of data", c.cfg.Timeouts.DataTerm)
		if err != nil {
			return err
		}
		d.Data = r
		if r.Code/100 == 2 {
			return c.fail("reading reply to end of data", fmt.Errorf("%w: %s to an empty message with no accepted recipient", ErrUnexpectedReply, r))
		}
		return transactionError(c.check("end of data", r))
	}
	return c.sendBody(env, d, commit, next, "")
}

// readEnvelope reads the replies to a pipelined envelope: RSET, MAIL, each
// RCPT and, if it was sent, DATA. An error means the connection is gone;
// refusals are in d. Every reply must be of a class its command can have,
// and nothing may follow the last: either would mean the replies are out
// of step with the commands.
func (c *Client) readEnvelope(env *envelope, d *Delivery) error {
	t := c.cfg.Timeouts
	if env.rset {
		r, err := c.readReplyTimeout("RSET", t.Command)
		if err != nil {
			return err
		}
		if err := c.rsetReply(r, c.check("RSET", r)); err != nil {
			return err
		}
	}
	r, err := c.readReplyTimeout("MAIL FROM", t.Mail)
	if err != nil {
		return err
	}
	d.Mail = r
	if err := c.envelopeReply("MAIL FROM", r, c.check("MAIL FROM", r)); err != nil {
		return err
	}
	for i := range env.m.To {
		r, err := c.readReplyTimeout("RCPT TO", t.Rcpt)
		if err != nil {
			return err
		}
		d.Rcpt[i] = r
		if err := c.envelopeReply("RCPT TO", r, c.check("RCPT TO", r)); err != nil {
			return err
		}
	}
	if env.withData {
		r, err := c.readReplyTimeout("DATA", t.DataInit)
		if err != nil {
			return err
		}
		d.Data = r
		if r.Code != 354 {
			cerr := c.check("DATA", r)
			if cerr == nil {
				return c.fail("reading reply to DATA", fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
			}
			if err := transactionError(cerr); err != nil {
				return err
			}
		}
	}
	// Nothing else was asked: anything buffered is a stray reply that would
	// be read as the answer to what comes next.
	if n := c.text.R.Buffered(); n > 0 {
		return c.fail("after the envelope", fmt.Errorf("%w (%d bytes)", ErrStrayReply, n))
	}
	return nil
}

// sendData starts the data phase after the envelope was accepted: BDAT
// where the server offers CHUNKING, DATA otherwise.
func (c *Client) sendData(env *envelope, d *Delivery, commit func() error, next func() *Message) error {
	if c.chunking() {
		return c.sendBody(env, d, commit, next, fmt.Sprintf("BDAT %d LAST", env.size))
	}
	r, err := c.cmd(c.cfg.Timeouts.DataInit, "DATA", "DATA")
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
	return c.sendBody(env, d, commit, next, "")
}

// sendBody calls commit, then writes the message (dot-stuffed after DATA,
// or as it is after the BDAT command line bdat) with, when next offers
// one, the following message's envelope in the same write, and reads the
// reply to the end of the data and, if an envelope went ahead, its
// replies.
func (c *Client) sendBody(env *envelope, d *Delivery, commit func() error, next func() *Message, bdat string) error {
	if err := commit(); err != nil {
		// Closing without the end of the data makes the server drop it.
		c.fail("before the final dot", err)
		c.conn.Close()
		return &CommitError{Err: err}
	}
	// Committing may have taken an fsync's time: a reply that came in
	// meanwhile would be read as the answer to the final dot (HAZARDS 7).
	if err := c.checkIdle(); err != nil {
		return err
	}
	// The wire form is written before this returns, so its memory serves
	// the next message too (but a huge one is not kept).
	buf := c.dataBuf[:0]
	if need := env.size + env.size/64 + 256; cap(buf) < need {
		buf = make([]byte, 0, need)
	}
	defer func() {
		if cap(buf) <= 1<<20 {
			c.dataBuf = buf[:0]
		}
	}()
	verb := "end of data"
	if bdat != "" {
		c.traceCommand(bdat)
		buf = append(buf, bdat...)
		buf = append(buf, '\r', '\n')
		buf = wireData(buf, env.m.Data, false)
		verb = "BDAT"
	} else {
		buf = dotStuff(buf, env.m.Data)
	}
	end := len(buf) // the octet that completes the message
	if c.cfg.Trace != nil {
		c.trace(">", fmt.Sprintf("[message data, %d octets]", env.size))
	}
	if next != nil && c.pipelining() {
		if nm := next(); nm != nil {
			if ne, err := c.prepare(nm); err == nil {
				buf = c.appendEnvelope(buf, ne)
				c.queued = ne
			}
		}
	}
	committed, err := c.writeData(buf, end)
	d.Committed = committed
	if err != nil {
		return err
	}
	r, err := c.readReplyTimeout(verb, c.cfg.Timeouts.DataTerm)
	if err != nil {
		return err
	}
	d.Data = r
	if r.Code/100 == 3 {
		return c.fail("reading reply to end of data", fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
	}
	if err := transactionError(c.check(verb, r)); err != nil {
		return err
	}
	if q := c.queued; q != nil {
		// The replies to the envelope sent ahead come next. They are read
		// now because they also vouch for this message's reply: if they are
		// out of step, so may the reply just read be.
		q.replies = Delivery{Rcpt: make([]Reply, len(q.m.To))}
		err := c.readEnvelope(q, &q.replies)
		q.read = true
		if err != nil {
			c.queued = nil
			if outOfStep(err) {
				return err
			}
		}
	}
	return nil
}

// writeData writes buf straight to the connection, after anything still
// buffered, a block at a time with a fresh deadline for each (RFC 5321
// 4.5.3.2.5), and reports whether the first end octets all went out: until
// the last octet of the final dot has left, the server cannot have taken
// the message.
func (c *Client) writeData(buf []byte, end int) (committed bool, err error) {
	if err := c.flush(c.cfg.Timeouts.DataBlock, "sending message data"); err != nil {
		return false, err
	}
	const block = 64 << 10
	written := 0
	for written < len(buf) {
		n := min(block, len(buf)-written)
		if err := c.conn.SetWriteDeadline(time.Now().Add(c.cfg.Timeouts.DataBlock)); err != nil {
			return written >= end, c.fail("sending message data", err)
		}
		k, err := c.conn.Write(buf[written : written+n])
		written += k
		if err != nil {
			return written >= end, c.fail("sending message data", err)
		}
	}
	return true, nil
}

// appendEnvelope appends the commands of a pipelined envelope to buf.
func (c *Client) appendEnvelope(buf []byte, env *envelope) []byte {
	line := func(s string) {
		c.traceCommand(s)
		buf = append(buf, s...)
		buf = append(buf, '\r', '\n')
	}
	if env.rset {
		line("RSET")
	}
	line("MAIL FROM:<" + env.m.From + ">" + env.params)
	for _, to := range env.m.To {
		line("RCPT TO:<" + to + ">")
	}
	if env.withData {
		line("DATA")
	}
	env.written = true
	return buf
}

// flush writes whatever commands are buffered.
func (c *Client) flush(timeout time.Duration, phase string) error {
	if c.text.W.Buffered() == 0 {
		return nil
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return c.fail(phase, err)
	}
	if err := c.text.W.Flush(); err != nil {
		return c.fail(phase, err)
	}
	return nil
}

// readReplyTimeout reads a reply, waiting at most timeout for it. A
// reply already in the read buffer in full is read without waiting, so
// the deadline, whose setting costs a clock reading and a timer update,
// is left alone: pipelined replies mostly come in together. The deadline
// left on the connection may have passed; that is harmless only because
// every read that can block sets its own first (here, in cmd, in start).
func (c *Client) readReplyTimeout(verb string, timeout time.Duration) (Reply, error) {
	if !c.replyBuffered() {
		if err := c.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return Reply{}, c.fail("reading reply to "+verb, err)
		}
	}
	return c.readReply(verb)
}

// replyBuffered reports whether the read buffer holds a whole line that
// is a reply's last (or one readReply refuses as it is): reading the
// reply then reads nothing from the connection.
func (c *Client) replyBuffered() bool {
	r := c.text.R
	b, _ := r.Peek(r.Buffered()) // what is buffered: no read
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return false
	}
	line := bytes.TrimSuffix(b[:i], []byte{'\r'})
	return len(line) < 4 || line[3] != '-'
}

// wireSize is the length of data once every line ends in CRLF and NULs
// are gone, before dot-stuffing (what RFC 1870 SIZE and BDAT count), and
// the length of its longest line without the CRLF.
//
// Messages from merge are in wire form already, so it goes a line at a
// time (bytes.IndexByte is vectorised) and hands any line holding a CR
// other than before its LF, or a NUL, to the octet-by-octet loop.
func wireSize(data []byte) (size, longest int) {
	for len(data) > 0 {
		line, rest, ok := cleanLine(data)
		if !ok {
			s, l := wireSizeSlow(data)
			return size + s, max(longest, l)
		}
		size += len(line) + 2
		longest = max(longest, len(line))
		data = rest
	}
	return size, longest
}

// cleanLine splits the first line off data: line without its line end,
// and rest after it. ok is false when the line holds a NUL or a CR that is
// not the one of a final CRLF, which only the slow loops treat right.
func cleanLine(data []byte) (line, rest []byte, ok bool) {
	line, rest = data, nil
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		line, rest = data[:i], data[i+1:]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	ok = bytes.IndexByte(line, '\r') < 0 && bytes.IndexByte(line, 0) < 0
	return line, rest, ok
}

// wireSizeSlow is wireSize an octet at a time, from the start of a line.
func wireSizeSlow(data []byte) (size, longest int) {
	line := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case 0:
			continue
		case '\r', '\n':
			if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			size += line + 2
			longest = max(longest, line)
			line = 0
			continue
		}
		line++
	}
	if line > 0 {
		size += line + 2
		longest = max(longest, line)
	}
	return size, longest
}

// dotStuff appends data to dst as it must go on the wire after DATA:
// every line ending CRLF (a lone CR or LF becomes CRLF, so no bare
// newline can end the data early on a lenient server: SMTP smuggling,
// CVE-2023-51764), NUL removed, a "." at the start of a line doubled
// (RFC 5321 4.5.2), and the final ".\r\n".
func dotStuff(dst, data []byte) []byte {
	return append(wireData(dst, data, true), '.', '\r', '\n')
}

// wireData is the one place message data is put into wire form. It ends
// with CRLF even when data does not. Without stuffing it is what BDAT
// carries (RFC 3030).
func wireData(dst, data []byte, stuff bool) []byte {
	for len(data) > 0 {
		line, rest, ok := cleanLine(data)
		if !ok {
			return wireDataSlow(dst, data, stuff)
		}
		if stuff && len(line) > 0 && line[0] == '.' {
			dst = append(dst, '.')
		}
		dst = append(dst, line...)
		dst = append(dst, '\r', '\n')
		data = rest
	}
	return dst
}

// wireDataSlow is wireData an octet at a time, from the start of a line.
func wireDataSlow(dst, data []byte, stuff bool) []byte {
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
