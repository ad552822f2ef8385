package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
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
		fmt.Fprintf(stderr, "bulkmail: %s has a row for every row of %s\n", path, lf.list)
		return nil
	}
	return usageErr("report --merge: %s does not match %s: %d rows of the list have no result (%s) and %d results have no row in the list (%s); is a shard's result missing, or from another list?",
		path, lf.list, len(missing), firstRows(missing), len(extra), firstRows(extra))
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
		if err := report.MergeResults(*mergeOut, fs.Args()...); err != nil {
			return withCode(exitUsage, err)
		}
		fmt.Fprintf(stderr, "bulkmail: merged %d result files into %s\n", fs.NArg(), *mergeOut)
		if lf.list != "" {
			return checkMergedRows(*mergeOut, &lf, stderr)
		}
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
	listID, err := hashFile(lf.list)
	if err != nil {
		return withCode(exitUsage, err)
	}
	if j.Job().List != listID {
		return usageErr("report: %s was written for a different version of %s", *journalPath, lf.list)
	}
	if rows, err := listRowsID(&lf, part); err != nil {
		return err
	} else if want := j.Job().Rows; want != "" && want != rows {
		return usageErr("report: %s was written for other recipients of %s (another --sheet, --email-column or --shard)", *journalPath, lf.list)
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
