package merge

import (
	"bytes"
	"sync"
)

// scratch is the working memory of one Render call: the template's dot,
// the text as templates write it, the normalised and encoded body, and the
// header block. Each is rebuilt for every message; reusing them saves the
// allocations and the growing of buffers that were most of a message's
// garbage. Nothing in it outlives the call that took it: Render copies the
// finished message out.
type scratch struct {
	data     map[string]string
	dataFull bool         // data was last filled from a full row
	exec     bytes.Buffer // one header value or the body, as executed
	norm     []byte       // the body, normalised
	qp       []byte       // the body, quoted-printable
	head     bytes.Buffer // the header block
	fields   []field
}

// maxScratch is the largest buffer kept for the next message; an unusually
// large body's memory is left to the collector rather than held for ever.
const maxScratch = 256 << 10

// scratchPool is kept per Template because the dot's keys are the bound
// list's columns. A sync.Pool rather than one scratch per Template since
// Render runs on several goroutines at once; the pool holds only memory
// that is cleared or overwritten before use, never a value one message
// could see from another.
type scratchPool struct{ p sync.Pool }

func (t *Template) getScratch() *scratch {
	if s, ok := t.scratch.p.Get().(*scratch); ok {
		return s
	}
	return &scratch{data: make(map[string]string, len(t.header)+len(t.alias))}
}

func (t *Template) putScratch(s *scratch) {
	if s.exec.Cap() > maxScratch || cap(s.norm) > maxScratch || cap(s.qp) > maxScratch || s.head.Cap() > maxScratch {
		return
	}
	// Drop the row's strings now rather than at the next message.
	clear(s.fields)
	t.scratch.p.Put(s)
}

// textPart encodes the text in s.exec as a MIME part of the given type, as
// newPart does. The part's data is in s and valid until s is used again.
func (s *scratch) textPart(contentType string) part {
	var sevenBit bool
	s.norm, sevenBit = appendNormalized(s.norm[:0], s.exec.Bytes())
	cte, data := encodeBodyTo(s.qp, s.norm, sevenBit)
	if cte == "quoted-printable" {
		s.qp = data // keep the grown buffer
	}
	return part{contentType: contentType, cte: cte, data: data}
}
