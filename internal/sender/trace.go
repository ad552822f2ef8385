package sender

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Trace writes the conversation of every connection to one writer, a line
// per command or reply, prefixed with the time and the connection number.
// Credentials are replaced by "[redacted]".
type Trace struct {
	mu sync.Mutex
	w  io.Writer
}

// NewTrace returns a Trace writing to w.
func NewTrace(w io.Writer) *Trace { return &Trace{w: w} }

func (t *Trace) write(id int, dir, text string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ts := time.Now().Format("15:04:05.000000")
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(t.w, "%s c%d %s %s\n", ts, id, dir, line)
	}
}

func (c *Client) trace(dir, text string) {
	if c.cfg.Trace != nil {
		c.cfg.Trace.write(c.id, dir, text)
	}
}

// traceCommand traces a command line, hiding what follows the mechanism
// of AUTH and every line sent during the exchange.
func (c *Client) traceCommand(line string) {
	if c.cfg.Trace == nil {
		return
	}
	if c.redacting {
		if f := strings.Fields(line); len(f) >= 2 && strings.EqualFold(f[0], "AUTH") {
			line = f[0] + " " + f[1] + " [redacted]"
		} else if len(f) == 1 && strings.EqualFold(f[0], "AUTH") {
			// AUTH alone: nothing to hide.
		} else {
			line = "[redacted]"
		}
	}
	c.trace(">", line)
}
