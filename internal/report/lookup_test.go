package report

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// lookupTestJournal writes at path a journal with every kind of record a
// row can end on: a batch-mode run (writeLookupJournal: delivered,
// refused, deferred and retried, commit only, invalid), then a run in
// message mode that sends some rows again (their records far from their
// neighbours'), with long records and strings json escapes, then a run in
// boot bootA killed with reserved rows that have no record since, and a
// torn last line. It returns the highest row number used.
func lookupTestJournal(t *testing.T, path string) int {
	t.Helper()
	const rows = 3000
	writeLookupJournal(t, path, rows)

	j, err := OpenJournal(path, JobID{List: "bench"}, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 27, 8, 0, 0, 123, time.FixedZone("", 3600))
	long := strings.Repeat("a long reply <&> ", 200)  // > 1 KiB: Last's second read
	huge := strings.Repeat("0123456789abcdef", 6<<10) // longer than one of LastBatch's reads
	for row := 5; row < rows; row += 37 {
		o := Outcome{Row: row, Email: "Zoë <x@example.org>", Status: Delivered,
			Rcpt:     Reply{Code: 250, Enhanced: "2.1.5", Text: "Ok \u2028 \"quoted\" \\ tab\t"},
			Data:     Reply{Code: 250, Text: "queued\nas ABC"},
			Attempts: 3, MessageID: "<m" + strings.Repeat("\u00e9", row%5) + "@x>", Conn: row, Start: start, Duration: -1}
		switch row % 5 {
		case 0:
			o.Status, o.Error, o.Data = Failed, long, Reply{}
		case 1:
			o.Status, o.Error = Rejected, huge
		case 2:
			o.Status, o.Email, o.Error = Invalid, "bad\xffutf8", "row: bad address"
		case 3:
			if err := j.Committing(row, 4, o.Email, o.MessageID); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := j.Record(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	// Killed in bootA with rows reserved: rows+10 to rows+19, new, of
	// which a few are committed or recorded, and some rows of the first
	// run, of which a few are sent again.
	j, err = OpenJournal(path, JobID{List: "bench"}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	var again []int
	for row := rows + 10; row < rows+20; row++ {
		again = append(again, row)
	}
	again = append(again, 2, 3, 4, 211, 101, 997, 1000)
	if err := j.Reserve(reservation(again...)); err != nil {
		t.Fatal(err)
	}
	for _, row := range []int{rows + 11, rows + 12, 3, 211} {
		if err := j.Committing(row, 2, "c@example.org", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Record(Outcome{Row: rows + 12, Status: Deferred, Error: "421 later"}); err != nil {
		t.Fatal(err)
	}
	// Not closed: the process is killed. A torn line follows.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"t":"outcome","row":7,"status":"deliv`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	j.f.Close() // releases the lock as the kernel would
	return rows + 20
}

// lastOracle is what Last must return for row: the journal's restarted
// outcome, or the row's last record (found through the index, read from
// data, decoded by json.Unmarshal) as an Outcome.
func lastOracle(t *testing.T, j *Journal, data []byte, row int) (Outcome, bool) {
	if o, ok := j.restarted[row]; ok {
		return o, true
	}
	off, ok := j.idx.get(row)
	if !ok {
		return Outcome{}, false
	}
	line := data[off:]
	line = line[:bytes.IndexByte(line, '\n')+1]
	var r record
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("row %d: %v", row, err)
	}
	if r.Row != row {
		t.Fatalf("row %d: record is row %d's", row, r.Row)
	}
	return r.outcome(), true
}

// TestLastBatchIsLast checks that LastBatch returns what Last returns,
// and that both return what the row's record says, for every kind of row,
// asked in any order and any grouping.
func TestLastBatchIsLast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	maxRow := lookupTestJournal(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, boot := range []string{bootA, bootB} {
		j, err := readJournal(path, boot)
		if err != nil {
			t.Fatal(err)
		}
		if boot == bootB && len(j.restarted) == 0 {
			t.Fatal("no rows in doubt after the restart")
		}
		kinds := map[string]int{}
		var all []int
		for row := -1; row <= maxRow+3; row++ {
			all = append(all, row)
			want, wok := lastOracle(t, j, data, row)
			got, ok := j.Last(row)
			if ok != wok || !reflect.DeepEqual(got, want) {
				t.Fatalf("boot %s: Last(%d) = %+v, %v; want %+v, %v", boot, row, got, ok, want, wok)
			}
			kinds[string(got.Status)+"/"+got.Error[:min(len(got.Error), 12)]]++
		}
		if len(kinds) < 9 || boot == bootB && kinds["in_doubt/the machine "] == 0 {
			t.Errorf("only %d kinds of outcome: %v", len(kinds), kinds)
		}
		rnd := rand.New(rand.NewPCG(3, uint64(len(boot))))
		check := func(name string, rows []int) {
			t.Helper()
			out := make([]Outcome, len(rows))
			found := make([]bool, len(rows))
			for i := range out {
				out[i] = Outcome{Row: -7, Error: "stale"} // LastBatch must set every one
				found[i] = i%2 == 0
			}
			j.LastBatch(rows, out, found)
			for i, row := range rows {
				want, wok := j.Last(row)
				if found[i] != wok || !reflect.DeepEqual(out[i], want) {
					t.Fatalf("boot %s, %s: row %d: LastBatch gave %+v, %v; Last %+v, %v", boot, name, row, out[i], found[i], want, wok)
				}
			}
		}
		check("all", all)
		check("none", nil)
		for _, n := range []int{1, 2, 7, 256} {
			for first := 0; first < len(all); first += n {
				check("consecutive", all[first:min(first+n, len(all))])
			}
		}
		shuffled := append([]int(nil), all...)
		rnd.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		for first := 0; first < len(shuffled); first += 300 {
			check("shuffled", shuffled[first:min(first+300, len(shuffled))])
		}
		check("repeated", []int{7, 7, 3000, 7, maxRow + 100, 0, 3000})
		// Each, which reads with LastBatch, gives every row Last knows, in
		// order.
		var each []int
		err = j.Each(func(o Outcome) error {
			want, ok := j.Last(o.Row)
			if !ok || !reflect.DeepEqual(o, want) {
				t.Fatalf("boot %s: Each gave %+v, Last %+v, %v", boot, o, want, ok)
			}
			each = append(each, o.Row)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var known []int
		for _, row := range all {
			if _, ok := j.Last(row); ok {
				known = append(known, row)
			}
		}
		if !reflect.DeepEqual(each, known) {
			t.Errorf("boot %s: Each gave rows %v, want %v", boot, each, known)
		}
		j.Close()
	}
}

// TestLastBatchDamaged checks that a record LastBatch cannot decode, or
// that is another row's, gets Last's answer, error and sticky error
// included.
func TestLastBatchDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	writeLookupJournal(t, path, 600)
	j, err := OpenJournal(path, JobID{List: "bench"}, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := j.Close(); err == nil {
			t.Error("Close after a damaged record was read: no error")
		}
	}()
	// Damage the records of rows 100 and 200 after they were indexed.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for row, repl := range map[int]string{100: `{"t":"outcome","row":101,`, 200: `{"t":"outcome","row":2` + "\x00\x00,"} {
		off, _ := j.idx.get(row)
		if _, err := f.WriteAt([]byte(repl), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	rows := []int{99, 100, 101, 200, 201}
	out := make([]Outcome, len(rows))
	found := make([]bool, len(rows))
	j.LastBatch(rows, out, found)
	if err := j.Record(Outcome{Row: 2, Status: Delivered}); err == nil {
		t.Error("Record after a damaged record was read: no error")
	}
	for i, row := range rows {
		want, ok := j.Last(row)
		if !found[i] || !ok || !reflect.DeepEqual(out[i], want) {
			t.Errorf("row %d: LastBatch gave %+v, Last %+v", row, out[i], want)
		}
		if damaged := row%100 == 0; damaged != (out[i].Status == InDoubt && strings.Contains(out[i].Error, "report: journal")) {
			t.Errorf("row %d: %+v", row, out[i])
		}
	}
}
