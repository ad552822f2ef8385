package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/bulkmail/bulkmail/internal/report"
)

// runReport rebuilds a result file from a journal without sending
// anything (e.g. after a run was killed), or merges the result files of
// shards into one.
func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, `bulkmail report --journal FILE --list FILE [--result FILE]
bulkmail report --merge OUT.xlsx SHARD.xlsx...

Rebuilds a result file from a journal without sending, or merges shard results.`)
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
	if j.ListID() != listID {
		return usageErr("report: %s was written for a different version of %s", *journalPath, lf.list)
	}
	counts, err := writeResult(*result, &lf, j, part, "not attempted")
	if err != nil {
		return withCode(exitAborted, err)
	}
	fmt.Fprintf(stderr, "bulkmail: %s; results in %s\n", counts, *result)
	return nil
}
