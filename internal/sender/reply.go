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
func readReply(r *bufio.Reader) (Reply, error) {
	var (
		reply Reply
		lines []string
	)
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return Reply{}, fmt.Errorf("%w: more than %d lines", ErrMalformedReply, maxReplyLines)
		}
		line, err := readLine(r)
		if err != nil {
			return Reply{}, err
		}
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
		lines = append(lines, text)
		if !more {
			break
		}
	}
	reply.Text = strings.Join(lines, "\n")
	return reply, nil
}

// readLine reads one CRLF- or LF-terminated line without its ending,
// refusing lines longer than maxReplyLine.
func readLine(r *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return "", err
		}
		line = append(line, chunk...)
		if len(line) > maxReplyLine {
			return "", fmt.Errorf("%w: line longer than %d octets", ErrMalformedReply, maxReplyLine)
		}
		if !isPrefix {
			return string(line), nil
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
// text when its class agrees with the reply code.
func splitEnhanced(code int, text string) (enhanced, rest string) {
	field, rest, _ := strings.Cut(text, " ")
	parts := strings.Split(field, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || parts[0][0]-'0' != byte(code/100) {
		return "", text
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return "", text
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return "", text
			}
		}
	}
	return field, rest
}
