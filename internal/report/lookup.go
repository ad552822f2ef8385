package report

import (
	"bytes"
	"cmp"
	"io"
	"slices"
	"sync"
)

// Reads of LastBatch: records within batchGap bytes of each other are read
// together, up to batchSpan bytes a read (plus a record's worth, so that
// the last one starting in the span is whole). The journal is written in
// time order and the rows were sent roughly in list order, so the records
// of neighbouring rows lie close together, between records no lookup
// asks for (commits, reservations) that the reads also take.
const (
	batchSpan = 64 << 10
	batchGap  = 8 << 10
	batchTail = 1024
)

// LastBatch sets out[i] and found[i] to what Last(rows[i]) returns, for
// every i; out and found must be as long as rows. It is Last for many
// rows at once, the result file's lookups: their records are read with a
// few large reads instead of one a row, and their strings share one
// allocation. A record it cannot read or decode itself it leaves to Last,
// which then says why, as it would have.
func (j *Journal) LastBatch(rows []int, out []Outcome, found []bool) {
	if len(out) != len(rows) || len(found) != len(rows) {
		panic("report: LastBatch: out and found must be as long as rows")
	}
	s := batchScratchPool.Get().(*batchScratch)
	defer s.release()

	// Every row's offset, under one hold of the lock.
	j.mu.Lock()
	for i, row := range rows {
		if o, ok := j.restarted[row]; ok {
			out[i], found[i] = o, true
			continue
		}
		off, ok := j.idx.get(row)
		if !ok {
			out[i], found[i] = Outcome{}, false
			continue
		}
		out[i], found[i] = Outcome{}, true
		s.want = append(s.want, wanted{off: off, i: i})
	}
	j.mu.Unlock()
	slices.SortFunc(s.want, func(a, b wanted) int { return cmp.Compare(a.off, b.off) })

	// Each record's line, copied into s.lines, or left to Last (end < 0).
	for k := 0; k < len(s.want); {
		base := s.want[k].off
		last := k
		for last+1 < len(s.want) {
			next := s.want[last+1].off
			if next-s.want[last].off > batchGap || next-base > batchSpan {
				break
			}
			last++
		}
		n := int(s.want[last].off-base) + batchTail
		if cap(s.buf) < n {
			s.buf = make([]byte, n)
		}
		buf := s.buf[:n]
		m, err := j.f.ReadAt(buf, base)
		if err != nil && err != io.EOF {
			m = 0 // Last reads them again, and says why it could not
		}
		buf = buf[:m]
		for ; k <= last; k++ {
			w := &s.want[k]
			w.start, w.end = 0, -1
			rel := int(w.off - base)
			if rel >= len(buf) {
				continue
			}
			nl := bytes.IndexByte(buf[rel:], '\n')
			if nl < 0 {
				continue // longer than the read: Last reads it whole
			}
			w.start = len(s.lines)
			s.lines = append(s.lines, buf[rel:rel+nl+1]...)
			w.end = len(s.lines)
		}
	}

	// One string holds every line, and the records' strings are cut from
	// it.
	text := string(s.lines)
	var rec record
	r := &rec
	for _, w := range s.want {
		row := rows[w.i]
		if w.end < 0 {
			out[w.i], found[w.i] = j.Last(row)
			continue
		}
		if err := decodeRecordIn(s.lines[w.start:w.end], text[w.start:w.end], &s.unescape, r); err != nil || r.Row != row {
			// Last reads the same line, and fails the same way.
			out[w.i], found[w.i] = j.Last(row)
			continue
		}
		out[w.i] = r.outcome()
	}
}

// wanted is a record LastBatch looks up: at off, for rows[i], and once
// read, at lines[start:end] (end < 0: not read).
type wanted struct {
	off        int64
	i          int
	start, end int
}

// batchScratch is the memory of one LastBatch, kept for the next.
type batchScratch struct {
	want     []wanted
	buf      []byte // a read
	lines    []byte // the lines looked up
	unescape []byte
}

var batchScratchPool = sync.Pool{New: func() any { return new(batchScratch) }}

func (s *batchScratch) release() {
	s.want, s.lines = s.want[:0], s.lines[:0]
	if cap(s.lines) > 4<<20 {
		s.lines = nil // do not pin a huge buffer
	}
	batchScratchPool.Put(s)
}
