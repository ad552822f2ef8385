package report

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestMergeResults(t *testing.T) {
	header := []string{"name", "note"}
	all := sampleRows()
	// A value and a row number that formatting could mangle.
	all = append(all, struct {
		o      Outcome
		values []string
	}{Outcome{Row: 1234567, Email: "big@x.test", Status: Skipped}, []string{"'quoted", "=1"}})
	tests := []struct {
		name string
		exts []string // of the shards
		out  string
	}{
		{"xlsx to xlsx", []string{"xlsx", "xlsx"}, "xlsx"},
		{"csv to csv", []string{"csv", "csv"}, "csv"},
		{"mixed to xlsx", []string{"csv", "xlsx", "csv"}, "xlsx"},
		{"xlsx to csv", []string{"xlsx", "xlsx"}, "csv"},
		{"one shard", []string{"xlsx"}, "xlsx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var inputs []string
			for i, ext := range tt.exts {
				var rows []struct {
					o      Outcome
					values []string
				}
				for j, r := range all {
					if j%len(tt.exts) == i {
						rows = append(rows, r)
					}
				}
				in := filepath.Join(dir, fmt.Sprintf("shard%d.%s", i, ext))
				writeResult(t, in, header, rows)
				inputs = append(inputs, in)
			}
			out := filepath.Join(dir, "merged."+tt.out)
			if err := MergeResults(out, inputs...); err != nil {
				t.Fatal(err)
			}
			direct := filepath.Join(dir, "direct."+tt.out)
			writeResult(t, direct, header, all)
			if tt.out == "csv" {
				if got, want := readCSV(t, out), readCSV(t, direct); !reflect.DeepEqual(got, want) {
					t.Errorf("merged:\ngot  %q\nwant %q", got, want)
				}
				return
			}
			got, want := readXLSX(t, out), readXLSX(t, direct)
			if !reflect.DeepEqual(got[ResultSheet], want[ResultSheet]) {
				t.Errorf("merged:\ngot  %q\nwant %q", got[ResultSheet], want[ResultSheet])
			}
			// Times are not in result files, so only the counts survive.
			for i := range want[SummarySheet] {
				if i >= 2 && i <= 8 {
					continue
				}
				if i >= len(got[SummarySheet]) || !reflect.DeepEqual(got[SummarySheet][i], want[SummarySheet][i]) {
					t.Errorf("summary row %d: got %q, want %q", i+1, got[SummarySheet], want[SummarySheet][i])
					break
				}
			}
		})
	}
}

func TestMergeResultsRollover(t *testing.T) {
	dir := t.TempDir()
	var inputs []string
	for shard := range 2 {
		in := filepath.Join(dir, fmt.Sprintf("s%d.xlsx", shard))
		r, err := CreateResult(in, []string{"n"})
		if err != nil {
			t.Fatal(err)
		}
		r.rowsPerSheet = 3
		for row := 2 + shard; row < 20; row += 2 {
			if err := r.Write(Outcome{Row: row, Status: Delivered}, []string{fmt.Sprint(row)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, in)
	}
	out := filepath.Join(dir, "out.csv")
	if err := MergeResults(out, inputs...); err != nil {
		t.Fatal(err)
	}
	got := readCSV(t, out)
	if len(got) != 19 {
		t.Fatalf("got %d lines, want 19", len(got))
	}
	for i, rec := range got[1:] {
		if w := fmt.Sprint(i + 2); rec[0] != w || rec[12] != w {
			t.Errorf("line %d: got %q, want row %s", i+2, rec, w)
		}
	}
}

func TestMergeResultsErrors(t *testing.T) {
	dir := t.TempDir()
	rows := sampleRows()
	a := filepath.Join(dir, "a.csv")
	writeResult(t, a, []string{"name", "note"}, rows[:2])
	b := filepath.Join(dir, "b.csv")
	writeResult(t, b, []string{"other"}, rows[2:])
	dup := filepath.Join(dir, "dup.xlsx")
	writeResult(t, dup, []string{"name", "note"}, rows[1:3])
	notResult := filepath.Join(dir, "list.csv")
	os.WriteFile(notResult, []byte("email,name\na@b,A\n"), 0o600)
	unordered := filepath.Join(dir, "unordered.csv")
	os.WriteFile(unordered, []byte(strings.Join(FixedColumns, ",")+"\n3,a@b,delivered,,,,,,,1,,\n2,c@d,delivered,,,,,,,1,,\n"), 0o600)
	badStatus := filepath.Join(dir, "bad.csv")
	os.WriteFile(badStatus, []byte(strings.Join(FixedColumns, ",")+"\n3,a@b,sent,,,,,,,1,,\n"), 0o600)

	tests := []struct {
		name   string
		inputs []string
		want   string
	}{
		{"no inputs", nil, "no input"},
		{"different columns", []string{a, b}, "columns"},
		{"duplicate row", []string{a, dup}, "row 3 is in both"},
		{"not a result", []string{notResult}, "not a result file"},
		{"unordered", []string{unordered}, "not in row order"},
		{"bad status", []string{badStatus}, "unknown status"},
		{"missing", []string{filepath.Join(dir, "missing.csv")}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, "out.xlsx")
			err := MergeResults(out, tt.inputs...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("output written despite the error")
			}
			if m, _ := filepath.Glob(filepath.Join(dir, ".out.xlsx.tmp-*")); len(m) != 0 {
				t.Errorf("temporary files left: %q", m)
			}
		})
	}
}
