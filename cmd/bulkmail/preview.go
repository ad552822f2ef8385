package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bulkmail/bulkmail/internal/merge"
)

// runPreview renders the first rows and shows exactly the bytes that would
// be sent after DATA (before dot-stuffing); it sends nothing.
func runPreview(ctx context.Context, args []string, stdout, stderr io.Writer, env *environment) error {
	fs := flag.NewFlagSet("preview", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, `bulkmail preview --list FILE --template FILE [flags]

Renders the first --limit rows and shows exactly the bytes that would be sent; sends nothing.`)
	var lf listFlags
	lf.register(fs)
	limit := fs.Int("limit", 1, "how many rows to render")
	out := fs.String("out", "", "write each message as an .eml file into this folder instead of stdout")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	list, tmpl, err := lf.open(env, func(int) string { return env.messageID() })
	if err != nil {
		return err
	}
	defer list.Close()
	if *out != "" {
		if err := os.MkdirAll(*out, 0o700); err != nil {
			return withCode(exitUsage, err)
		}
	}
	bad := 0
	for shown := 0; shown < *limit; {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rec, err := list.Next()
		if err == io.EOF {
			break
		}
		var rowErr *merge.RowError
		if err != nil && !errors.As(err, &rowErr) {
			return withCode(exitUsage, err)
		}
		var msg *merge.Message
		if err == nil {
			msg, err = tmpl.Render(rec)
		}
		if err != nil {
			fmt.Fprintf(stderr, "bulkmail: %v\n", err)
			bad++
			shown++
			continue
		}
		shown++
		if *out == "" {
			fmt.Fprintf(stdout, "MAIL FROM:<%s>\n", msg.From)
			for _, to := range msg.To {
				fmt.Fprintf(stdout, "RCPT TO:<%s>\n", to)
			}
			fmt.Fprintf(stdout, "\n")
			stdout.Write(msg.Data)
			fmt.Fprintf(stdout, "\n")
			continue
		}
		name := filepath.Join(*out, fmt.Sprintf("row-%06d.eml", rec.Row))
		// 0600, as the journal and results: it holds a recipient's data.
		if err := os.WriteFile(name, msg.Data, 0o600); err != nil {
			return withCode(exitAborted, err)
		}
		fmt.Fprintf(stdout, "%s\t%s\n", name, msg.To[0])
	}
	if bad > 0 {
		return &exitError{code: exitUndelivered}
	}
	return nil
}
