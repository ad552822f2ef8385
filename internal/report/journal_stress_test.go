package report

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type opKind int

const (
	opCommit opKind = iota
	opRecord
	opUnsynced
	opNote
)

type stressOp struct {
	kind opKind
	mid  string
	ok   bool // returned nil
}

// checkInvariants verifies, under j.mu, that the index holds written
// records only.
func checkInvariants(t *testing.T, j *Journal) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.written < j.size {
		t.Errorf("written %d < size %d", j.written, j.size)
	}
	for _, row := range j.idx.rows() {
		off, _ := j.idx.get(row)
		if off >= j.written {
			t.Errorf("row %d indexed at %d >= written size %d", row, off, j.written)
		}
	}
}

// fault: "" none, "full": dup2 /dev/full over j.w midway (writes and fsyncs
// fail), "pipe": dup2 a pipe over j.w (writes succeed, fsyncs fail).
func runStress(t *testing.T, fault string) {
	path := filepath.Join(t.TempDir(), "j")
	j := openTest(t, path, listA, false)
	if fault != "" {
		w, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		j.mu.Lock()
		if _, err := w.Seek(j.size, 0); err != nil {
			t.Fatal(err)
		}
		j.w = w
		j.mu.Unlock()
	}
	const G, R, K = 10, 8, 120
	ops := make([][][]stressOp, G) // [g][row][]op
	var errSeen atomic.Bool
	var bad atomic.Int32
	mustFail := func(what string, started bool, err error) {
		if started && err == nil && bad.Add(1) < 5 {
			t.Errorf("%s returned nil after an error had been returned", what)
		}
		if err != nil {
			errSeen.Store(true)
		}
	}
	faultAt := int64(rand.Intn(G * K))
	var nops atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			checkInvariants(t, j)
			time.Sleep(50 * time.Microsecond)
		}
	}()
	for g := 0; g < G; g++ {
		ops[g] = make([][]stressOp, R)
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g) + time.Now().UnixNano()))
			for k := 0; k < K; k++ {
				if fault != "" && nops.Add(1) == faultAt {
					var fd int
					switch fault {
					case "full":
						f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
						if err != nil {
							panic(err)
						}
						fd = int(f.Fd())
						defer f.Close()
					case "pipe":
						var p [2]int
						if err := unix.Pipe(p[:]); err != nil {
							panic(err)
						}
						go func() {
							b := make([]byte, 1<<16)
							for {
								if n, _ := unix.Read(p[0], b); n <= 0 {
									return
								}
							}
						}()
						fd = p[1]
					}
					if err := unix.Dup2(fd, int(j.w.Fd())); err != nil {
						panic(err)
					}
				}
				ri := rng.Intn(R)
				row := 1 + g*1000 + ri
				mid := fmt.Sprintf("<%d.%d.%d@x>", g, row, k)
				o := outcomeFor(row)
				o.MessageID = mid
				started := errSeen.Load()
				var err error
				var kind opKind = -1
				switch p := rng.Intn(100); {
				case p < 30:
					kind = opCommit
					err = j.Committing(row, k+1, o.Email, mid)
				case p < 45:
					kind = opRecord
					err = j.Record(o)
				case p < 70:
					kind = opUnsynced
					err = j.RecordUnsynced(o)
				case p < 85:
					kind = opNote
					err = j.Note(o)
				case p < 92:
					err = j.Sync()
					mustFail("Sync", started, err)
				case p < 96:
					j.SetGroup(1 + rng.Intn(8))
				default:
					j.mu.Lock()
					j.fsyncTime = time.Duration(rng.Intn(2000)) * time.Microsecond
					j.mu.Unlock()
				}
				if kind < 0 {
					continue
				}
				mustFail(fmt.Sprint("op", kind), started, err)
				ops[g][ri] = append(ops[g][ri], stressOp{kind, mid, err == nil})
				if err == nil && (kind == opCommit || kind == opRecord) {
					got, ok := j.Last(row)
					if !ok || got.MessageID != mid {
						t.Errorf("row %d: after a durable %v Last = %q (%v), want %q", row, kind, got.MessageID, ok, mid)
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(stop)
	cerr := j.Close()
	if fault == "" && cerr != nil {
		t.Fatal(cerr)
	}
	if fault != "" && errSeen.Load() && cerr == nil {
		t.Errorf("Close returned nil after an error")
	}
	r, err := ReadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for g := range ops {
		for ri, seq := range ops[g] {
			row := 1 + g*1000 + ri
			if len(seq) == 0 {
				continue
			}
			got, ok := r.Last(row)
			// The earliest acceptable op: the last one that must be in the file.
			lo := -1
			for i, op := range seq {
				if !op.ok {
					continue
				}
				switch {
				case fault == "" || op.kind == opCommit || op.kind == opRecord:
					lo = i
				case fault == "full" && op.kind == opUnsynced:
					lo = i
				}
			}
			if lo < 0 {
				continue
			}
			found := -1
			for i := lo; i < len(seq); i++ {
				if ok && seq[i].mid == got.MessageID {
					found = i
				}
			}
			if fault == "" {
				if found != len(seq)-1 {
					t.Errorf("row %d: file's last record %q (ok=%v), want %q", row, got.MessageID, ok, seq[len(seq)-1].mid)
				}
			} else if found < 0 {
				t.Errorf("row %d: file's last record %q (ok=%v) is older than op %d %q which returned nil (kind %v)", row, got.MessageID, ok, lo, seq[lo].mid, seq[lo].kind)
			}
		}
	}
}

func TestJournalStress(t *testing.T)     { runStress(t, "") }
func TestJournalStressFull(t *testing.T) { runStress(t, "full") }
func TestJournalStressPipe(t *testing.T) { runStress(t, "pipe") }
