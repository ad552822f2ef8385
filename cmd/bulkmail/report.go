package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bulkmail/bulkmail/internal/merge"
	"github.com/bulkmail/bulkmail/internal/report"
)

// checkMergedRows checks that the merged result at path has a row for
// every row of the list and none other: a shard whose result was not given
// (or was given twice, or belongs to another list) would otherwise go
// unnoticed in a result that looks complete.
func checkMergedRows(path string, lf *listFlags, stderr io.Writer) error {
	lo, err := lf.listOptions()
	if err != nil {
		return err
	}
	list, err := merge.OpenList(lf.list, lo)
	if err != nil {
		return withCode(exitUsage, err)
	}
	defer list.Close()
	want := map[int]bool{}
	for {
		rec, err := list.Next()
		if err == io.EOF {
			break
		}
		var rowErr *merge.RowError
		if err != nil && !errors.As(err, &rowErr) {
			return withCode(exitUsage, err)
		}
		want[rec.Row] = true
	}
	var extra []int
	err = report.ResultRows(path, func(row int) error {
		if !want[row] {
			extra = append(extra, row)
		}
		delete(want, row)
		return nil
	})
	if err != nil {
		return withCode(exitUsage, err)
	}
	missing := slices.Sorted(maps.Keys(want))
	if len(missing) == 0 && len(extra) == 0 {
		fmt.Fprintf(stderr, "bulkmail: every row of %s has exactly one result\n", lf.list)
		return nil
	}
	var why []string
	if len(missing) > 0 {
		why = append(why, fmt.Sprintf("%s of the list without a result (%s)", rowsCount(len(missing)), firstRows(missing)))
	}
	if len(extra) > 0 {
		why = append(why, fmt.Sprintf("%s without a row in the list (%s)", countOf(len(extra), "result", "results"), firstRows(extra)))
	}
	return usageErr("report --merge: the shard results do not match %s: %s; is a shard's result missing, or from another list? Nothing written", lf.list, strings.Join(why, " and "))
}

// firstRows lists up to ten row numbers.
func firstRows(rows []int) string {
	if len(rows) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, r := range rows {
		if i == 10 {
			fmt.Fprintf(&b, ", … %d more", len(rows)-10)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "row %d", r)
	}
	return b.String()
}

// runReport rebuilds a result file from a journal without sending
// anything (e.g. after a run was killed), or merges the result files of
// shards into one.
func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, `bulkmail report --journal FILE --list FILE [--result FILE]
bulkmail report --merge OUT.xlsx [--list FILE] SHARD.xlsx...

Rebuilds a result file from a journal without sending, or merges shard results
(with --list, checking that every row of the list has exactly one result).`)
	var lf listFlags
	lf.registerList(fs)
	journalPath := fs.String("journal", "", "journal written by send")
	result := fs.String("result", "results.xlsx", "result file to write, .xlsx or .csv")
	shardFlag := fs.String("shard", "", "the shard i/n the journal belongs to, as given to send")
	mergeOut := fs.String("merge", "", "merge the result files given as arguments into this file")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if *mergeOut != "" {
		if fs.NArg() == 0 {
			return usageErr("report --merge OUT: name the shard result files to merge after the flags")
		}
		out := *mergeOut
		if lf.list != "" {
			// Merged beside OUT and checked before it takes OUT's place: a
			// merge that misses a shard must not leave a short file where
			// the whole one is expected.
			out = filepath.Join(filepath.Dir(*mergeOut), fmt.Sprintf(".bulkmail-merge-%d%s", os.Getpid(), filepath.Ext(*mergeOut)))
			defer os.Remove(out)
		}
		if err := report.MergeResults(out, fs.Args()...); err != nil {
			return withCode(exitUsage, err)
		}
		if lf.list != "" {
			if err := checkMergedRows(out, &lf, stderr); err != nil {
				return err
			}
			if err := os.Rename(out, *mergeOut); err != nil {
				return withCode(exitAborted, err)
			}
		}
		fmt.Fprintf(stderr, "bulkmail: merged %d result files into %s\n", fs.NArg(), *mergeOut)
		return nil
	}
	if *journalPath == "" || lf.list == "" {
		return usageErr("report: --journal and --list are required (or --merge OUT FILES...)")
	}
	part, err := parseShard(*shardFlag)
	if err != nil {
		return err
	}
	j, err := report.ReadJournal(*journalPath)
	if err != nil {
		return withCode(exitUsage, err)
	}
	defer j.Close()
	var want report.JobID
	if want.List, err = hashFile(lf.list); err != nil {
		return withCode(exitUsage, err)
	}
	if want.Rows, err = listRowsID(&lf, part); err != nil {
		return err
	}
	// The journal's own check, without the template, which report has not.
	switch err := j.Job().Check(want, report.OpenOptions{RequireRows: part.count > 1}); {
	case errors.Is(err, report.ErrListChanged):
		return usageErr("report: %s was written for another list, or for another version of %s (the content differs)", *journalPath, lf.list)
	case errors.Is(err, report.ErrRowsUnknown):
		return usageErr("report: %s was written by an earlier bulkmail for a sharded job, and shards now compare addresses in Unicode normal form: the report could put a few rows in the wrong shard; use the bulkmail that wrote it", *journalPath)
	case errors.Is(err, report.ErrRowsChanged):
		return usageErr("report: %s was written for other recipients of %s (another --sheet, --email-column or --shard, or shards of an earlier bulkmail)", *journalPath, lf.list)
	}
	counts, err := writeResult(*result, &lf, j, part, "not attempted")
	if err != nil {
		return withCode(exitAborted, err)
	}
	fmt.Fprintf(stderr, "bulkmail: %s; results in %s\n", counts, *result)
	return nil
}

// listRowsID opens the list as lf says and returns rowsID for it.
func listRowsID(lf *listFlags, part shard) (string, error) {
	lo, err := lf.listOptions()
	if err != nil {
		return "", err
	}
	list, err := merge.OpenList(lf.list, lo)
	if err != nil {
		return "", withCode(exitUsage, err)
	}
	defer list.Close()
	return rowsID(list, part), nil
}
