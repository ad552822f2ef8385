package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/bulkmail/bulkmail/internal/report"
)

// runReport rebuilds a result file from a journal, e.g. after a run was
// killed, without sending anything.
func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var lf listFlags
	lf.register(fs)
	journalPath := fs.String("journal", "", "journal written by send (required)")
	result := fs.String("result", "results.xlsx", "result file to write, .xlsx or .csv")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: exitUsage}
	}
	if *journalPath == "" || lf.list == "" {
		return usageErr("report: --journal and --list are required")
	}
	j, err := report.ReadJournal(*journalPath)
	if err != nil {
		return withCode(exitUsage, err)
	}
	defer j.Close()
	counts, err := writeResult(*result, &lf, j, "not attempted")
	if err != nil {
		return withCode(exitAborted, err)
	}
	fmt.Fprintf(stderr, "bulkmail: %s; results in %s\n", counts, *result)
	return nil
}
