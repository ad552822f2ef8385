package merge

import (
	"bytes"
	"crypto/rand"
	"sync"
	"time"
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

	// The address-count check's dot of stand-ins and its output.
	stand    map[string]string
	standOut bytes.Buffer

	// The Date header of the last message: a second's messages share it.
	dateUnix int64
	dateLoc  *time.Location
	dateText string

	// Random bytes from crypto/rand, read in blocks rather than per
	// Message-ID; rand[randUsed:] are unused.
	rand     [1024]byte
	randUsed int
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

// date formats now for the Date header, as now.Format(time.RFC1123Z),
// reusing the last string while the second and the zone are the same.
func (s *scratch) date(now time.Time) string {
	if s.dateText == "" || now.Unix() != s.dateUnix || now.Location() != s.dateLoc {
		s.dateUnix, s.dateLoc, s.dateText = now.Unix(), now.Location(), now.Format(time.RFC1123Z)
	}
	return s.dateText
}

// random returns n unused random bytes (n at most len(s.rand)), which the
// caller must not keep.
func (s *scratch) random(n int) []byte {
	if s.randUsed == 0 || len(s.rand)-s.randUsed < n {
		rand.Read(s.rand[:])
		s.randUsed = 0
	}
	b := s.rand[s.randUsed : s.randUsed+n]
	s.randUsed += n
	return b
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
