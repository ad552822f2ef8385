package report

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/xuri/excelize/v2"
)

// replyMeanings gives each reply code the wording of the reply table in RFC
// 5321 sections 4.2.2 and 4.2.3 (and RFC 4954 for AUTH codes), so an operator
// reading the summary need not look them up.
var replyMeanings = map[int]string{
	211: "System status, or system help reply",
	214: "Help message",
	220: "Service ready",
	221: "Service closing transmission channel",
	235: "Authentication succeeded",
	250: "Requested mail action okay, completed",
	251: "User not local; will forward",
	252: "Cannot VRFY user, but will accept message and attempt delivery",
	334: "Server challenge (AUTH)",
	354: "Start mail input; end with <CRLF>.<CRLF>",
	421: "Service not available, closing transmission channel",
	432: "A password transition is needed",
	450: "Requested mail action not taken: mailbox unavailable",
	451: "Requested action aborted: local error in processing",
	452: "Requested action not taken: insufficient system storage",
	454: "Temporary authentication failure",
	455: "Server unable to accommodate parameters",
	500: "Syntax error, command unrecognized",
	501: "Syntax error in parameters or arguments",
	502: "Command not implemented",
	503: "Bad sequence of commands",
	504: "Command parameter not implemented",
	530: "Authentication required",
	534: "Authentication mechanism is too weak",
	535: "Authentication credentials invalid",
	538: "Encryption required for requested authentication mechanism",
	550: "Requested action not taken: mailbox unavailable",
	551: "User not local; please try <forward-path>",
	552: "Requested mail action aborted: exceeded storage allocation",
	553: "Requested action not taken: mailbox name not allowed",
	554: "Transaction failed",
	555: "MAIL FROM/RCPT TO parameters not recognized or not implemented",
}

// ReplyMeaning returns the RFC 5321 meaning of a reply code, or a generic
// wording from its first digit for a code the RFC does not list.
func ReplyMeaning(code int) string {
	if m, ok := replyMeanings[code]; ok {
		return m
	}
	switch code / 100 {
	case 2:
		return "Success (code not in RFC 5321)"
	case 3:
		return "Intermediate (code not in RFC 5321)"
	case 4:
		return "Temporary failure (code not in RFC 5321)"
	case 5:
		return "Permanent failure (code not in RFC 5321)"
	}
	return "Not a valid reply code"
}

// topDomains is how many recipient domains the summary lists.
const topDomains = 50

// maxDomains bounds the domains counted, so that a list of a million
// distinct domains cannot grow the summary without limit; the rest are
// counted together.
const maxDomains = 100_000

// otherDomains labels the rows whose domain was not counted on its own.
const otherDomains = "(other domains)"

// counts holds a count per Status, in the order of statuses.
type counts [len(statuses)]int

func (c *counts) total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// summary accumulates what the summary sheet shows while rows are written.
type summary struct {
	status     counts
	rcptCodes  map[int]int
	dataCodes  map[int]int
	domains    map[string]*counts
	start, end time.Time
	attempted  int // rows that reached a server at least once
}

func newSummary() *summary {
	return &summary{rcptCodes: map[int]int{}, dataCodes: map[int]int{}, domains: map[string]*counts{}}
}

func (s *summary) add(o *Outcome) {
	i := o.Status.index()
	if i >= 0 {
		s.status[i]++
	}
	if o.Rcpt.Code != 0 {
		s.rcptCodes[o.Rcpt.Code]++
	}
	if o.Data.Code != 0 {
		s.dataCodes[o.Data.Code]++
	}
	if o.Attempts > 0 {
		s.attempted++
	}
	d := domainOf(o.Email)
	c := s.domains[d]
	if c == nil {
		if len(s.domains) >= maxDomains {
			d = otherDomains
			c = s.domains[d]
		}
		if c == nil {
			c = new(counts)
			// A copy: d may be cut from a string that holds a whole
			// batch of journal records (Journal.LastBatch), which the
			// key would otherwise keep.
			s.domains[strings.Clone(d)] = c
		}
	}
	if i >= 0 {
		c[i]++
	}
	if !o.Start.IsZero() {
		if s.start.IsZero() || o.Start.Before(s.start) {
			s.start = o.Start
		}
		if end := o.Start.Add(o.Duration); end.After(s.end) {
			s.end = end
		}
	}
}

// domainOf returns the lower-cased domain of an address, or "(none)".
func domainOf(email string) string {
	at := strings.LastIndexByte(email, '@')
	if at < 0 || at == len(email)-1 {
		return "(none)"
	}
	return strings.ToLower(email[at+1:])
}

// write adds the summary sheet, with its charts, to f.
func (s *summary) write(f *excelize.File) error {
	const sh = SummarySheet
	if _, err := f.NewSheet(sh); err != nil {
		return err
	}
	bold, err := f.NewStyle(&excelize.Style{Font: &excelize.Font{Bold: true}})
	if err != nil {
		return err
	}
	w := sheetWriter{f: f, sheet: sh, bold: bold}

	w.row(1, true, "bulkmail result summary")
	elapsed := s.end.Sub(s.start).Seconds()
	w.row(3, false, "first attempt started", timeCell(s.start))
	w.row(4, false, "last attempt ended", timeCell(s.end))
	w.row(5, false, "elapsed seconds", elapsed)
	w.row(6, false, "rows", s.status.total())
	w.row(7, false, "rows attempted", s.attempted)
	if elapsed > 0 {
		w.row(8, false, "attempted per second", float64(s.attempted)/elapsed)
		w.row(9, false, "delivered per second", float64(s.status[0])/elapsed)
	}

	// Statuses: rows 12.. (header on 11).
	const statusTop = 11
	w.row(statusTop, true, "status", "rows")
	for i, st := range statuses {
		w.row(statusTop+1+i, false, string(st), s.status[i])
	}
	statusEnd := statusTop + len(statuses)

	// Reply codes.
	codeTop := statusEnd + 3
	w.row(codeTop, true, "reply code", "meaning", "RCPT replies", "DATA replies")
	codes := make([]int, 0, len(s.rcptCodes)+len(s.dataCodes))
	for c := range s.rcptCodes {
		codes = append(codes, c)
	}
	for c := range s.dataCodes {
		if _, ok := s.rcptCodes[c]; !ok {
			codes = append(codes, c)
		}
	}
	slices.Sort(codes)
	for i, c := range codes {
		w.row(codeTop+1+i, false, c, ReplyMeaning(c), s.rcptCodes[c], s.dataCodes[c])
	}
	codeEnd := codeTop + len(codes)

	// Recipient domains, most rows first.
	domTop := codeEnd + 3
	hdr := []any{"recipient domain", "rows"}
	for _, st := range statuses {
		hdr = append(hdr, string(st))
	}
	w.row(domTop, true, hdr...)
	type dc struct {
		name string
		c    *counts
		n    int
	}
	doms := make([]dc, 0, len(s.domains))
	for d, c := range s.domains {
		doms = append(doms, dc{d, c, c.total()})
	}
	slices.SortFunc(doms, func(a, b dc) int {
		if c := cmp.Compare(b.n, a.n); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	if len(doms) > topDomains {
		doms = doms[:topDomains]
	}
	for i, d := range doms {
		vals := []any{xlsxText(d.name), d.n}
		for _, v := range d.c {
			vals = append(vals, v)
		}
		w.row(domTop+1+i, false, vals...)
	}
	if w.err != nil {
		return w.err
	}
	for col, width := range map[string]float64{"A": 28, "B": 50, "C": 13, "D": 13} {
		if err := f.SetColWidth(sh, col, col, width); err != nil {
			return err
		}
	}

	if err := f.AddChart(sh, "L2", &excelize.Chart{
		Type: excelize.Pie,
		Series: []excelize.ChartSeries{{
			Name:       fmt.Sprintf("%s!$B$%d", sh, statusTop),
			Categories: fmt.Sprintf("%s!$A$%d:$A$%d", sh, statusTop+1, statusEnd),
			Values:     fmt.Sprintf("%s!$B$%d:$B$%d", sh, statusTop+1, statusEnd),
		}},
		Title:    excelize.ChartTitle{Paragraph: []excelize.RichTextRun{{Text: "Rows by status"}}},
		Legend:   excelize.ChartLegend{Position: "right"},
		PlotArea: excelize.ChartPlotArea{ShowVal: true},
	}); err != nil {
		return err
	}
	if len(codes) > 0 {
		series := []excelize.ChartSeries{}
		for _, col := range []string{"C", "D"} {
			series = append(series, excelize.ChartSeries{
				Name:       fmt.Sprintf("%s!$%s$%d", sh, col, codeTop),
				Categories: fmt.Sprintf("%s!$A$%d:$A$%d", sh, codeTop+1, codeEnd),
				Values:     fmt.Sprintf("%s!$%s$%d:$%s$%d", sh, col, codeTop+1, col, codeEnd),
			})
		}
		if err := f.AddChart(sh, "L20", &excelize.Chart{
			Type:   excelize.Col,
			Series: series,
			Title:  excelize.ChartTitle{Paragraph: []excelize.RichTextRun{{Text: "Replies by code"}}},
			Legend: excelize.ChartLegend{Position: "bottom"},
		}); err != nil {
			return err
		}
	}
	return nil
}

// timeCell formats a time for the summary, or "" when there is none.
func timeCell(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// sheetWriter writes rows of cells with the ordinary (non-streaming)
// excelize API, keeping the first error.
type sheetWriter struct {
	f     *excelize.File
	sheet string
	bold  int
	err   error
}

func (w *sheetWriter) row(n int, bold bool, vals ...any) {
	if w.err != nil {
		return
	}
	cell, err := excelize.CoordinatesToCellName(1, n)
	if err == nil {
		err = w.f.SetSheetRow(w.sheet, cell, &vals)
	}
	if err == nil && bold {
		end, _ := excelize.CoordinatesToCellName(len(vals), n)
		err = w.f.SetCellStyle(w.sheet, cell, end, w.bold)
	}
	w.err = err
}
