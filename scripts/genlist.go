//go:build ignore

// Genlist writes a recipient list for the benchmark scripts: a header
// "email,name,plan,city,pad" and one row per recipient with a distinct
// address. The format follows the extension of -out (.csv or .xlsx).
//
//	go run scripts/genlist.go -rows 1000000 -out /tmp/list.csv
package main

import (
	"bufio"
	"encoding/csv"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/xuri/excelize/v2"
)

var (
	names  = []string{"Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth", "José García", "Zoë Müller"}
	plans  = []string{"basic", "pro", "team", "enterprise"}
	cities = []string{"London", "New York", "Zürich", "Amsterdam", "Sevilla", "Berlin"}
)

func row(i int, pad string) []string {
	return []string{
		fmt.Sprintf("user%07d@example.org", i),
		names[i%len(names)],
		plans[i%len(plans)],
		cities[i%len(cities)],
		pad,
	}
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("genlist: ")
	rows := flag.Int("rows", 100000, "data rows to write")
	out := flag.String("out", "", "output file, .csv or .xlsx (required)")
	padLen := flag.Int("pad", 0, "length of the pad column's text in each row")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	pad := strings.Repeat("x", *padLen)
	var err error
	switch strings.ToLower(filepath.Ext(*out)) {
	case ".csv":
		err = writeCSV(*out, *rows, pad)
	case ".xlsx":
		err = writeXLSX(*out, *rows, pad)
	default:
		log.Fatalf("%s: want .csv or .xlsx", *out)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func writeCSV(path string, rows int, pad string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w := csv.NewWriter(bw)
	w.Write([]string{"email", "name", "plan", "city", "pad"})
	for i := range rows {
		w.Write(row(i, pad))
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeXLSX(path string, rows int, pad string) error {
	f := excelize.NewFile()
	defer f.Close()
	sw, err := f.NewStreamWriter("Sheet1")
	if err != nil {
		return err
	}
	cells := []any{"email", "name", "plan", "city", "pad"}
	if err := sw.SetRow("A1", cells); err != nil {
		return err
	}
	for i := range rows {
		for k, v := range row(i, pad) {
			cells[k] = v
		}
		if err := sw.SetRow("A"+strconv.Itoa(i+2), cells); err != nil {
			return err
		}
	}
	if err := sw.Flush(); err != nil {
		return err
	}
	return f.SaveAs(path)
}
