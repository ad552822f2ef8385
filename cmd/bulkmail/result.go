package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/bulkmail/bulkmail/internal/merge"
	"github.com/bulkmail/bulkmail/internal/report"
)

// statusCounts counts result rows by status.
type statusCounts map[report.Status]int

func (c statusCounts) String() string {
	total := 0
	var parts []string
	for _, s := range report.Statuses() {
		if n := c[s]; n > 0 {
			total += n
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	if total == 0 {
		return "0 rows"
	}
	return fmt.Sprintf("%d rows: %s", total, strings.Join(parts, ", "))
}

// undelivered counts rows that did not reach their recipient and were not
// meant to be skipped.
func (c statusCounts) undelivered() int {
	n := 0
	for s, k := range c {
		if s != report.Delivered && s != report.Skipped {
			n += k
		}
	}
	return n
}

// writeResult streams the list again and writes one result row per input
// row, in input order, from the journal: so a run that was killed loses
// nothing, and the next run (or bulkmail report) writes the whole file.
// Rows the journal does not know are reported as failed with reason;
// rows outside the shard are left out.
func writeResult(path string, lf *listFlags, j *report.Journal, part shard, reason string) (statusCounts, error) {
	lo, err := lf.listOptions()
	if err != nil {
		return nil, err
	}
	list, err := merge.OpenList(lf.list, lo)
	if err != nil {
		return nil, err
	}
	defer list.Close()
	res, err := report.CreateResult(path, list.Header())
	if err != nil {
		return nil, err
	}
	counts := statusCounts{}
	emailIdx := list.EmailIndex()
	for {
		rec, err := list.Next()
		if err == io.EOF {
			break
		}
		var rowErr *merge.RowError
		if err != nil && !errors.As(err, &rowErr) {
			res.Abort()
			return nil, err
		}
		if !part.contains(rec) {
			continue
		}
		o, ok := j.Last(rec.Row)
		if !ok {
			o = report.Outcome{Row: rec.Row, Email: rowEmail(rec, emailIdx), Status: report.Failed, Error: reason}
		}
		if err := res.Write(o, rec.Values); err != nil {
			res.Abort()
			return nil, err
		}
		counts[o.Status]++
	}
	if err := res.Close(); err != nil {
		return nil, err
	}
	return counts, nil
}
