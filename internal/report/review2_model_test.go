package report

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// review2 model test: runs of a reserving journal following the pool's
// protocol (reserve a batch, then per row: refusals before the dot
// recorded as Retrying does, commits, dots and their answers), stopped at
// random by kill -9 (same boot, file as written) or by a machine crash
// (another boot, the file cut at any line end from the durable size on,
// sometimes with a garbled last line), over several runs. After each stop
// the journal is opened again and every row is checked:
//   - a row whose last dot got no answer reads in_doubt;
//   - a row delivered reads delivered or in_doubt;
//   - no row reads delivered that was not;
//   - in the same boot, every row reads exactly its last written record.
type mRow struct {
	dotted     bool   // a final dot went out at some time
	unknown    bool   // the last dot got no recorded answer (yet)
	delivered  bool   // some dot got 250
	lastStatus Status // last record written; "" none
}

func TestReview2ReserveModel(t *testing.T) {
	seeds := 300
	if s := os.Getenv("REVIEW2_SEEDS"); s != "" {
		fmt.Sscan(s, &seeds)
	}
	if testing.Short() {
		seeds = 30
	}
	for seed := range seeds {
		review2Model(t, uint64(seed))
		if t.Failed() {
			t.Logf("seed %d", seed)
			return
		}
	}
}

func review2Model(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	dir := t.TempDir()
	path := filepath.Join(dir, "journal")
	const nrows = 40
	truth := make([]mRow, nrows+1)
	boot := 0
	bootName := func(b int) string { return fmt.Sprintf("boot-%d", b) }
	email := func(row int) string { return fmt.Sprintf("r%d@example.org", row) }
	mid := func(row int) string { return fmt.Sprintf("<%d@bulkmail.test>", row) }
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		for _, l := range log {
			t.Log(l)
		}
		b, _ := os.ReadFile(path)
		t.Logf("journal:\n%s", b)
		t.Fatalf("seed %d: "+format, append([]any{seed}, args...)...)
	}

	for run := 0; run < 6; run++ {
		// Most runs reserve (--journal-sync batch); some fsync every
		// message, reading what runs before them reserved.
		j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootName(boot), Reserve: rng.IntN(4) != 0})
		if err != nil {
			fail("run %d open: %v", run, err)
		}
		// Check every row.
		for row := 1; row <= nrows; row++ {
			o, ok := j.Last(row)
			tr := truth[row]
			switch {
			case tr.unknown && (!ok || o.Status != InDoubt):
				fail("run %d: row %d: last dot unanswered, reads %q (found %v)", run, row, o.Status, ok)
			case tr.delivered && (!ok || o.Status != Delivered && o.Status != InDoubt):
				fail("run %d: row %d: delivered, reads %q (found %v)", run, row, o.Status, ok)
			case ok && o.Status == Delivered && !tr.delivered:
				fail("run %d: row %d: reads delivered, was not", run, row)
			}
			// Rows now in doubt stay so: the model forgets what they were.
			if ok && o.Status == InDoubt {
				truth[row].unknown = true
			}
		}
		log = append(log, fmt.Sprintf("run %d boot %d", run, boot))
		// The rows this run sends.
		var todo []int
		for row := 1; row <= nrows; row++ {
			o, ok := j.Last(row)
			if !ok || o.Status == Failed || o.Status == Deferred {
				todo = append(todo, row)
			}
		}
		rng.Shuffle(len(todo), func(a, b int) { todo[a], todo[b] = todo[b], todo[a] })
		todo = todo[:min(len(todo), 1+rng.IntN(20))]

		// ops is the run, as closures; the stop comes after a random one.
		type op struct {
			name string
			do   func() error
		}
		var ops []op
		attempt := map[int]int{}
		for len(todo) > 0 {
			n := min(len(todo), 1+rng.IntN(6))
			batch := append([]int(nil), todo[:n]...)
			todo = todo[n:]
			ops = append(ops, op{fmt.Sprintf("reserve %v", batch), func() error {
				rs := make([]Reservation, len(batch))
				for i, row := range batch {
					rs[i] = Reservation{Row: row, Email: email(row), MessageID: mid(row)}
				}
				return j.Reserve(rs)
			}})
			for _, row := range batch {
				if rng.IntN(8) == 0 {
					continue // reserved, never reached
				}
				for tries := 0; tries < 3; tries++ {
					row := row
					attempt[row]++
					a := attempt[row]
					switch rng.IntN(6) {
					case 0: // deferred at RCPT, retried
						ops = append(ops, op{fmt.Sprintf("row %d rcpt 450 (retry)", row), func() error {
							truth[row].lastStatus = Deferred
							return j.Record(Outcome{Row: row, Email: email(row), Status: Deferred, Attempts: a, MessageID: mid(row), Error: "will be retried"})
						}})
						continue
					case 1: // commit written, connection lost before the dot
						ops = append(ops, op{fmt.Sprintf("row %d commit, lost before dot", row), func() error {
							truth[row].lastStatus = InDoubt
							return j.Committing(row, a, email(row), mid(row))
						}}, op{fmt.Sprintf("row %d failed (retry)", row), func() error {
							truth[row].lastStatus = Failed
							return j.Record(Outcome{Row: row, Email: email(row), Status: Failed, Attempts: a, MessageID: mid(row), Error: "will be retried"})
						}})
						continue
					case 2: // rejected at RCPT
						ops = append(ops, op{fmt.Sprintf("row %d rcpt 550", row), func() error {
							truth[row].lastStatus = Rejected
							return j.Record(Outcome{Row: row, Email: email(row), Status: Rejected, Attempts: a, MessageID: mid(row)})
						}})
					default: // the dot
						ops = append(ops, op{fmt.Sprintf("row %d commit+dot", row), func() error {
							truth[row].lastStatus = InDoubt
							err := j.Committing(row, a, email(row), mid(row))
							if err == nil {
								truth[row].dotted, truth[row].unknown = true, true
							}
							return err
						}})
						var st Status
						switch rng.IntN(4) {
						case 0:
							st = Deferred
						case 1:
							st = InDoubt
						default:
							st = Delivered
						}
						ops = append(ops, op{fmt.Sprintf("row %d dot answered %s", row, st), func() error {
							truth[row].lastStatus = st
							err := j.Record(Outcome{Row: row, Email: email(row), Status: st, Attempts: a, MessageID: mid(row)})
							if err == nil && st != InDoubt {
								truth[row].unknown = false
								if st == Delivered {
									truth[row].delivered = true
								}
							}
							return err
						}})
						if st == Deferred {
							continue
						}
					}
					break
				}
			}
		}
		stopAt := rng.IntN(len(ops) + 2) // past the end: a clean close
		for i, o := range ops {
			if i == stopAt {
				break
			}
			log = append(log, "  "+o.name)
			if err := o.do(); err != nil {
				fail("run %d %s: %v", run, o.name, err)
			}
		}
		if stopAt >= len(ops) {
			log = append(log, "  close")
			if err := j.Close(); err != nil {
				fail("close: %v", err)
			}
		} else {
			j.mu.Lock()
			durable := j.size
			j.mu.Unlock()
			mode := rng.IntN(3)
			if mode == 2 {
				// An fsync fails (the disk), then the process ends: the
				// mark must make the next run in this boot distrust what
				// was only written, which the kernel may have dropped.
				if err := j.WriteOut(); err != nil {
					fail("writeout: %v", err)
				}
				pr, pw, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				j.mu.Lock()
				j.w = pw
				j.mu.Unlock()
				if err := j.Sync(); err == nil {
					mode = 0 // everything was durable: no fsync to fail
				}
				pw.Close()
				pr.Close()
			}
			j.f.Close() // killed
			if mode == 0 {
				log = append(log, "  kill -9")
				// Same boot: exact.
				r, err := readJournal(path, bootName(boot))
				if err != nil {
					fail("read after kill: %v", err)
				}
				for row := 1; row <= nrows; row++ {
					o, ok := r.Last(row)
					if ok != (truth[row].lastStatus != "") || o.Status != truth[row].lastStatus && truth[row].lastStatus != "" {
						// A row with no record this run may still have one from before.
						if truth[row].lastStatus != "" {
							r.Close()
							fail("after kill: row %d reads %q (found %v), last written %q", row, o.Status, ok, truth[row].lastStatus)
						}
					}
				}
				r.Close()
			} else {
				written, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				var cuts []int64
				for _, c := range lineEnds(written) {
					if c >= durable {
						cuts = append(cuts, c)
					}
				}
				cut := cuts[rng.IntN(len(cuts))]
				keep := written[:cut]
				if rng.IntN(3) == 0 && int64(len(written)) > cut {
					keep = append(append([]byte(nil), keep...), []byte("{\"t\":\"comm\x00\x00\x00\n")...)
				}
				if err := os.WriteFile(path, keep, 0o600); err != nil {
					t.Fatal(err)
				}
				if mode == 1 {
					boot++
					log = append(log, fmt.Sprintf("  machine crash, cut at %d (durable %d, written %d)", cut, durable, len(written)))
				} else {
					log = append(log, fmt.Sprintf("  failed fsync, pages dropped: cut at %d (durable %d, written %d)", cut, durable, len(written)))
				}
			}
		}
		// Rows whose last record is lost are judged by the next open.
		for row := range truth {
			truth[row].lastStatus = ""
		}
	}
}
