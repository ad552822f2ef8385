package sender

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Reply is one reply as the server sent it, success and failure alike:
// operators trace a message by the queue id in the text of a 250.
type Reply struct {
	Code     int    // three-digit reply code, e.g. 250
	Enhanced string // RFC 3463 enhanced status code, e.g. "2.1.5"; "" if the server sent none
	Text     string // the text of every line, enhanced codes removed, joined with "\n"
}

// Positive reports whether the reply is 2xx or 3xx.
func (r Reply) Positive() bool { return r.Code >= 200 && r.Code < 400 }

// Temporary reports whether the reply is a transient negative one (4xx).
func (r Reply) Temporary() bool { return r.Code/100 == 4 }

// Permanent reports whether the reply is a permanent negative one (5xx).
func (r Reply) Permanent() bool { return r.Code/100 == 5 }

// String formats the reply the way it appeared on the wire (one line).
func (r Reply) String() string {
	s := strconv.Itoa(r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if r.Text != "" {
		s += " " + strings.ReplaceAll(r.Text, "\n", " / ")
	}
	return s
}

// ReplyError is a reply the server sent that refused a command. The
// connection is still in step with the server unless the code is 421.
type ReplyError struct {
	Command string // the command verb, e.g. "RCPT TO"
	Reply   Reply
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("sender: %s: %s", e.Command, e.Reply)
}

// Temporary reports whether the refusal was transient (4xx).
func (e *ReplyError) Temporary() bool { return e.Reply.Temporary() }

// ProtocolError means the conversation broke: an I/O error, a timeout, a
// malformed or unexpected reply. The connection is out of step with the
// server and must be discarded, never reused.
type ProtocolError struct {
	Phase string // what the client was doing, e.g. "reading reply to RCPT TO"
	Err   error
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("sender: %s: %v", e.Phase, e.Err)
}

func (e *ProtocolError) Unwrap() error { return e.Err }

var (
	// ErrMalformedReply is a reply line that is not "ddd", "ddd text" or
	// "ddd-text", or a multi-line reply whose lines disagree on the code.
	ErrMalformedReply = errors.New("malformed reply")
	// ErrUnexpectedReply is a reply whose class makes no sense for the
	// command (a 354 to RCPT, a 250 to DATA): the replies are out of step.
	ErrUnexpectedReply = errors.New("unexpected reply")
	// ErrStrayReply is data the server sent that no command asked for.
	ErrStrayReply = errors.New("server sent data no command asked for")
)

// Limits on a reply, so a hostile or broken server cannot make us buffer
// without end. RFC 5321 4.5.3.1.5 allows 512 octets a line; be generous.
const (
	maxReplyLine  = 8192
	maxReplyLines = 1000
)

// readReply reads one complete reply, all its lines. It accepts a bare
// "250" with no text (HAZARDS 6). Any malformation is an error wrapping
// ErrMalformedReply; the caller treats it as a dead connection.
//
// cache, when not nil, remembers one-line replies by their exact line:
// a server answers most commands of most messages with the same few
// lines ("250 2.1.5 Ok"), and a line met before is not parsed, or
// copied, again. The Reply is the one parsing the line gives.
func readReply(r *bufio.Reader, cache *replyCache) (Reply, error) {
	var (
		reply Reply
		first string   // the first line's text
		lines []string // every line's text, from the second line on
	)
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return Reply{}, fmt.Errorf("%w: more than %d lines", ErrMalformedReply, maxReplyLines)
		}
		raw, err := readLine(r)
		if err != nil {
			return Reply{}, err
		}
		if n == 0 && cache != nil {
			if cached, ok := cache.m[string(raw)]; ok {
				return cached, nil
			}
		}
		line := string(raw)
		code, more, text, err := parseReplyLine(line)
		if err != nil {
			return Reply{}, err
		}
		if n == 0 {
			reply.Code = code
		} else if code != reply.Code {
			return Reply{}, fmt.Errorf("%w: line %d has code %d, first line %d", ErrMalformedReply, n+1, code, reply.Code)
		}
		enhanced, rest := splitEnhanced(code, text)
		if n == 0 {
			reply.Enhanced = enhanced
		}
		if enhanced != "" && enhanced == reply.Enhanced {
			text = rest
		}
		switch {
		case n == 0:
			first = text
		case n == 1:
			lines = append(lines, first, text)
		default:
			lines = append(lines, text)
		}
		if !more {
			if n == 0 {
				reply.Text = first
				cache.add(line, reply)
				return reply, nil
			}
			break
		}
	}
	reply.Text = strings.Join(lines, "\n")
	return reply, nil
}

// replyCache holds one-line replies by their line, up to a bound: the
// first few dozen distinct ones, which on a connection carrying message
// after message are the ones that come back every time.
type replyCache struct {
	m map[string]Reply
}

const (
	replyCacheSize = 32
	replyCacheLine = 128 // longer lines (queue ids, say) are not kept
)

// add keeps reply under line if there is room; c may be nil.
func (c *replyCache) add(line string, reply Reply) {
	if c == nil || len(line) > replyCacheLine || len(c.m) >= replyCacheSize {
		return
	}
	if c.m == nil {
		c.m = make(map[string]Reply, replyCacheSize)
	}
	c.m[line] = reply
}

// readLine reads one CRLF- or LF-terminated line without its ending,
// refusing lines longer than maxReplyLine. The line may be r's buffer,
// valid until the next read from r.
func readLine(r *bufio.Reader) ([]byte, error) {
	chunk, isPrefix, err := r.ReadLine()
	if err != nil {
		return nil, err
	}
	if !isPrefix && len(chunk) <= maxReplyLine {
		return chunk, nil // the whole line, in r's buffer
	}
	var line []byte
	for {
		line = append(line, chunk...)
		if len(line) > maxReplyLine {
			return nil, fmt.Errorf("%w: line longer than %d octets", ErrMalformedReply, maxReplyLine)
		}
		if !isPrefix {
			return line, nil
		}
		chunk, isPrefix, err = r.ReadLine()
		if err != nil {
			return nil, err
		}
	}
}

func parseReplyLine(line string) (code int, more bool, text string, err error) {
	if len(line) < 3 {
		return 0, false, "", fmt.Errorf("%w: %q", ErrMalformedReply, line)
	}
	for i := 0; i < 3; i++ {
		if line[i] < '0' || line[i] > '9' {
			return 0, false, "", fmt.Errorf("%w: %q", ErrMalformedReply, line)
		}
	}
	code, _ = strconv.Atoi(line[:3])
	// RFC 5321 4.2: the first digit is 2-5; 1xx and 6xx+ are not SMTP.
	if code < 200 || code > 599 {
		return 0, false, "", fmt.Errorf("%w: code %d out of range: %q", ErrMalformedReply, code, line)
	}
	switch {
	case len(line) == 3:
		return code, false, "", nil
	case line[3] == ' ':
		return code, false, line[4:], nil
	case line[3] == '-':
		return code, true, line[4:], nil
	}
	return 0, false, "", fmt.Errorf("%w: %q", ErrMalformedReply, line)
}

// splitEnhanced takes an RFC 3463 status code ("2.1.5 ") off the front of
// text when its class agrees with the reply code: one digit, then two
// fields of one to three digits, separated by dots.
func splitEnhanced(code int, text string) (enhanced, rest string) {
	field, rest, _ := strings.Cut(text, " ")
	if len(field) < 5 || field[0]-'0' != byte(code/100) || field[1] != '.' {
		return "", text
	}
	p := field[2:]
	for k := 0; k < 2; k++ {
		i := 0
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
		if i < 1 || i > 3 {
			return "", text
		}
		switch {
		case k == 0 && i < len(p) && p[i] == '.':
			p = p[i+1:]
		case k == 1 && i == len(p):
			p = ""
		default:
			return "", text
		}
	}
	return field, rest
}
