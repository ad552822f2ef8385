package merge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/bits"
	"os"
	"slices"
)

// FirstRows remembers, for every address it is given, the first row that
// had it, so that a later row with the same address can name the row it
// repeats.
//
// Addresses are kept as 64-bit hashes of their AddressKey: the newest ones
// in a small table in memory, older ones in sorted runs in unlinked
// temporary files, each run with a Bloom filter so that a new address, the
// usual case, is answered without reading the disk. Memory is a 3 MB table
// plus the filters' 1.25 bytes an address (a million rows: about 4.5 MB);
// disk is 12 bytes an address. Runs are merged by level, fanIn of one size
// into one of the next, so each address is rewritten about log(n) times
// and a lookup reads at most fanIn filters a level. Two different
// addresses share a hash with odds of about n²/2⁶⁵ (10⁻⁸ for a million
// rows); even then the row is reported as a duplicate naming the other
// row, never sent twice.
type FirstRows struct {
	seed maphash.Seed
	dir  string

	// Tunables, fixed by NewFirstRows; tests make them small.
	memLimit int // addresses in memory before they are spilled as a run
	fanIn    int // runs on disk before they are merged into one
	block    int // entries between two fence keys of a run

	mem  hashTable
	runs []*spillRun // oldest first; their levels never rise along the slice

	entries []entry // scratch for spilling
	buf     []byte  // scratch for reading a block
}

// entry is an address hash and the first row that had it. On disk it is
// 12 bytes: the hash, then the row, little-endian.
type entry struct {
	key uint64
	row uint32
}

const entrySize = 12

// NewFirstRows returns an empty FirstRows whose spilled runs go to an
// unnamed temporary file in dir (the journal's folder, say: a folder that
// is known to be on disk and writable). Close releases it.
func NewFirstRows(dir string) *FirstRows {
	return newFirstRows(dir, 1<<17, 8, 256)
}

func newFirstRows(dir string, memLimit, fanIn, block int) *FirstRows {
	return &FirstRows{
		seed:     maphash.MakeSeed(),
		dir:      dir,
		memLimit: memLimit,
		fanIn:    fanIn,
		block:    block,
		mem:      newHashTable(memLimit),
	}
}

// Add records that row has address addr, unless an earlier row had it: then
// it returns that row and records nothing. Rows are numbered from 1 and
// must be below 2³²; an error is a failure of the temporary file.
func (s *FirstRows) Add(addr string, row int) (first int, err error) {
	if row < 1 || row > 1<<32-1 {
		return 0, fmt.Errorf("merge: row %d out of range", row)
	}
	key := maphash.String(s.seed, AddressKey(addr))
	if key == 0 {
		key = 1 // 0 marks an empty slot of the table; the same on disk
	}
	if r, ok := s.mem.get(key); ok {
		return int(r), nil
	}
	for _, run := range s.runs {
		if !run.bloom.mayHave(key) {
			continue
		}
		r, ok, err := s.search(run, key)
		if err != nil {
			return 0, err
		}
		if ok {
			return int(r), nil
		}
	}
	s.mem.put(key, uint32(row))
	if s.mem.n >= s.memLimit {
		if err := s.spill(); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

// Close releases the memory and the temporary files.
func (s *FirstRows) Close() error {
	var err error
	for _, run := range s.runs {
		if cerr := run.f.Close(); err == nil {
			err = cerr
		}
	}
	s.mem = hashTable{}
	s.runs, s.entries, s.buf = nil, nil, nil
	return err
}

// spillRun is one sorted run of entries, in a file of its own.
type spillRun struct {
	f      *os.File
	n      int
	level  int      // 0 for a spill of the table; k+1 for a merge of level k
	fences []uint64 // the key of every block-th entry
	bloom  bloom
}

// spill writes the table in memory as a new sorted run of level 0, then
// merges runs while fanIn of them share a level.
func (s *FirstRows) spill() error {
	s.entries = s.mem.appendEntries(s.entries[:0])
	slices.SortFunc(s.entries, func(a, b entry) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	run, err := s.writeRun(len(s.entries), func(yield func(entry) error) error {
		for _, e := range s.entries {
			if err := yield(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.runs = append(s.runs, run)
	s.mem.clear()
	for {
		// Levels never rise along s.runs, so the runs of the last one's
		// level are the last ones.
		level := s.runs[len(s.runs)-1].level
		k := 0
		for k < len(s.runs) && s.runs[len(s.runs)-1-k].level == level {
			k++
		}
		if k < s.fanIn {
			return nil
		}
		if err := s.mergeRuns(len(s.runs) - k); err != nil {
			return err
		}
	}
}

// mergeRuns merges s.runs[from:] into one run of the next level.
func (s *FirstRows) mergeRuns(from int) error {
	runs := s.runs[from:]
	total := 0
	readers := make([]*bufio.Reader, len(runs))
	heads := make([]entry, len(runs))
	left := make([]int, len(runs))
	for i, run := range runs {
		total += run.n
		readers[i] = bufio.NewReaderSize(io.NewSectionReader(run.f, 0, int64(run.n)*entrySize), 64<<10)
		left[i] = run.n
	}
	var rec [entrySize]byte
	next := func(i int) error {
		if _, err := io.ReadFull(readers[i], rec[:]); err != nil {
			return s.fileErr("read", err)
		}
		heads[i] = decodeEntry(rec[:])
		left[i]--
		return nil
	}
	live := make([]int, 0, len(runs)) // runs with a head
	for i := range runs {
		if left[i] > 0 {
			if err := next(i); err != nil {
				return err
			}
			live = append(live, i)
		}
	}
	merged, err := s.writeRun(total, func(yield func(entry) error) error {
		for len(live) > 0 {
			// A handful of runs: a linear scan beats a heap.
			k := 0
			for j := 1; j < len(live); j++ {
				if heads[live[j]].key < heads[live[k]].key {
					k = j
				}
			}
			i := live[k]
			if err := yield(heads[i]); err != nil {
				return err
			}
			if left[i] == 0 {
				live = slices.Delete(live, k, k+1)
				continue
			}
			if err := next(i); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	merged.level = runs[0].level + 1
	for _, run := range runs {
		run.f.Close() // unlinked: its space goes with it
	}
	s.runs = append(s.runs[:from], merged)
	return nil
}

// writeRun writes n entries, given in key order by each, to a new
// temporary file, and returns the run with its fences and Bloom filter.
func (s *FirstRows) writeRun(n int, each func(yield func(entry) error) error) (*spillRun, error) {
	f, err := s.tempFile()
	if err != nil {
		return nil, err
	}
	run := &spillRun{f: f, n: n, bloom: newBloom(n)}
	w := bufio.NewWriterSize(f, 64<<10)
	var rec [entrySize]byte
	i := 0
	err = each(func(e entry) error {
		if i%s.block == 0 {
			run.fences = append(run.fences, e.key)
		}
		run.bloom.add(e.key)
		binary.LittleEndian.PutUint64(rec[:8], e.key)
		binary.LittleEndian.PutUint32(rec[8:], e.row)
		i++
		_, err := w.Write(rec[:])
		return err
	})
	if err == nil {
		err = w.Flush()
	}
	if err == nil && i != n {
		err = fmt.Errorf("wrote %d entries of %d", i, n)
	}
	if err != nil {
		f.Close()
		return nil, s.fileErr("write", err)
	}
	return run, nil
}

// search looks key up in run: the fences name the one block that can hold
// it, and that block is read and searched.
func (s *FirstRows) search(run *spillRun, key uint64) (uint32, bool, error) {
	// The last fence not above key starts the block.
	b, found := slices.BinarySearch(run.fences, key)
	if !found {
		if b == 0 {
			return 0, false, nil
		}
		b--
	}
	lo := b * s.block
	hi := min(lo+s.block, run.n)
	size := (hi - lo) * entrySize
	if cap(s.buf) < size {
		s.buf = make([]byte, size)
	}
	buf := s.buf[:size]
	if _, err := run.f.ReadAt(buf, int64(lo)*entrySize); err != nil {
		return 0, false, s.fileErr("read", err)
	}
	i, j := 0, hi-lo
	for i < j {
		h := int(uint(i+j) >> 1)
		if binary.LittleEndian.Uint64(buf[h*entrySize:]) < key {
			i = h + 1
		} else {
			j = h
		}
	}
	if i < hi-lo {
		if e := decodeEntry(buf[i*entrySize:]); e.key == key {
			return e.row, true, nil
		}
	}
	return 0, false, nil
}

func decodeEntry(b []byte) entry {
	return entry{key: binary.LittleEndian.Uint64(b), row: binary.LittleEndian.Uint32(b[8:])}
}

// tempFile creates a file in s.dir and unlinks it at once: nothing is left
// behind however the process ends.
func (s *FirstRows) tempFile() (*os.File, error) {
	f, err := os.CreateTemp(s.dir, ".bulkmail-dedup-*")
	if err != nil {
		return nil, fmt.Errorf("merge: duplicate index: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("merge: duplicate index: %w", err)
	}
	return f, nil
}

func (s *FirstRows) fileErr(op string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("merge: duplicate index in %s: %s: %w", s.dir, op, err)
}

// hashTable is an open-addressing table of hashes to rows. The hashes are
// uniform already, so the low bits pick the slot; 0 marks an empty slot
// (Add never passes a hash of 0).
type hashTable struct {
	keys []uint64
	rows []uint32
	n    int
}

// newHashTable returns a table that holds limit entries at most half full.
func newHashTable(limit int) hashTable {
	size := 1 << bits.Len(uint(2*limit-1))
	return hashTable{keys: make([]uint64, size), rows: make([]uint32, size)}
}

func (t *hashTable) get(key uint64) (uint32, bool) {
	mask := uint64(len(t.keys) - 1)
	for i := key & mask; ; i = (i + 1) & mask {
		switch t.keys[i] {
		case key:
			return t.rows[i], true
		case 0:
			return 0, false
		}
	}
}

// put adds a key that get did not find.
func (t *hashTable) put(key uint64, row uint32) {
	mask := uint64(len(t.keys) - 1)
	i := key & mask
	for t.keys[i] != 0 {
		i = (i + 1) & mask
	}
	t.keys[i], t.rows[i] = key, row
	t.n++
}

func (t *hashTable) appendEntries(out []entry) []entry {
	for i, k := range t.keys {
		if k != 0 {
			out = append(out, entry{key: k, row: t.rows[i]})
		}
	}
	return out
}

func (t *hashTable) clear() {
	clear(t.keys)
	t.n = 0
}

// bloom is a Bloom filter of about ten bits a key and seven probes: about
// one new address in a hundred costs a block read per run.
type bloom struct {
	bits []uint64
	m    uint64 // number of bits
}

const bloomProbes = 7

func newBloom(n int) bloom {
	words := (10*n + 63) / 64
	if words == 0 {
		words = 1
	}
	return bloom{bits: make([]uint64, words), m: uint64(words) * 64}
}

// probe returns the i-th bit position for key: double hashing over the two
// halves of an already uniform hash, reduced to [0, m) by multiplication.
func (b *bloom) probe(key uint64, i int) uint64 {
	h := (key>>32 | key<<32) + uint64(i)*(key|1)
	hi, _ := bits.Mul64(h, b.m)
	return hi
}

func (b *bloom) add(key uint64) {
	for i := range bloomProbes {
		p := b.probe(key, i)
		b.bits[p/64] |= 1 << (p % 64)
	}
}

func (b *bloom) mayHave(key uint64) bool {
	for i := range bloomProbes {
		p := b.probe(key, i)
		if b.bits[p/64]&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}
