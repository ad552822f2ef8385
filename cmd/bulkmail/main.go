// Command bulkmail merges a recipient list into a template and delivers one
// personal message per row over a small pool of reused SMTP connections,
// recording every server reply in a result spreadsheet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `bulkmail: batch mail merge and bulk SMTP sender

Usage:
  bulkmail send    --list FILE --template FILE [flags]   render and deliver one message per row
  bulkmail preview --list FILE --template FILE [flags]   show the exact bytes that would be sent
  bulkmail sink    [--listen ADDR] [--dir DIR]           run the capture server to rehearse a job
  bulkmail probe   --smtp URL [flags]                    check a server before a big send
  bulkmail report  --journal FILE --list FILE [--result FILE]   rebuild a result file from a journal
  bulkmail report  --merge OUT.xlsx SHARD.xlsx...                merge the result files of shards

Run "bulkmail COMMAND -h" for the flags of a command.

Without --smtp, send delivers to the built-in capture server on a free
loopback port and writes each message to outbox/: nothing leaves the machine.

` + exitStatuses

// exitStatuses is the table in usage, every subcommand's -h and the README.
const exitStatuses = `Exit status:
  0  every row was delivered (or skipped as a duplicate, suppressed or done before)
  1  the run finished but some rows were not delivered, or a Cc/Bcc of a row was
     refused (see the result file)
  2  usage or input error, found before anything was sent
  3  aborted: server unreachable, authentication refused, TLS unavailable,
     too many connection failures, or the journal could not be written
  4  another run holds the journal lock: this run sent nothing
  5  interrupted by SIGINT or SIGTERM; the journal and result are consistent
`

// Exit statuses, documented in usage and the README.
const (
	exitOK          = 0
	exitUndelivered = 1
	exitUsage       = 2
	exitAborted     = 3
	exitLocked      = 4
	exitInterrupted = 5
)

// exitError carries the exit status an error means.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

func withCode(code int, err error) error { return &exitError{code: code, err: err} }

func main() {
	log.SetFlags(0)
	log.SetPrefix("bulkmail: ")
	ctx, cancel := context.WithCancel(context.Background())
	// The first signal stops the run cleanly; a second one ends the
	// process at once (the journal is consistent at every instant).
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		log.Print("signal received: finishing the messages on the wire; send another to stop at once")
		cancel()
		<-sig
		log.Print("second signal: stopping now")
		os.Exit(exitInterrupted)
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(exitCode(err))
}

// exitCode is the one place an error becomes an exit status.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ee.err != nil {
			log.Print(ee.err)
		}
	default:
		log.Print(err)
	}
	return exitStatus(err)
}

// exitStatus is the exit status err stands for.
func exitStatus(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	}
	return exitAborted
}

// run is bulkmail without the process: arguments in, error out.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runWith(ctx, args, stdout, stderr, defaultEnv())
}

func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, env *environment) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: exitUsage}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "send":
		return runSend(ctx, rest, stdout, stderr, env)
	case "preview":
		return runPreview(ctx, rest, stdout, stderr, env)
	case "sink":
		return runSink(ctx, rest, stdout, stderr)
	case "probe":
		return runProbe(ctx, rest, stdout, stderr, env)
	case "report":
		return runReport(ctx, rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageErr("unknown command %q", cmd)
}

// parseFlags parses a subcommand's flags. done is true when the command
// must not go on: -h was asked for (err nil) or the flags are wrong (a
// usage error; the flag package already said why).
func parseFlags(fs *flag.FlagSet, args []string) (done bool, err error) {
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return true, nil
	case err != nil:
		return true, &exitError{code: exitUsage}
	}
	return false, nil
}

// commandExitStatuses are those of the commands that send nothing.
var commandExitStatuses = map[string]string{
	"preview": `Exit status:
  0  every row shown rendered
  1  some rows could not be rendered
  2  usage or input error
  3  a file could not be written
`,
	"probe": `Exit status:
  0  the server was reached and answered
  2  usage error
  3  the server could not be reached or refused us
`,
	"report": `Exit status:
  0  the result was written
  2  usage or input error: a journal for another list or shard, or a merge
     that misses rows or holds them twice (nothing written)
  3  a file could not be written
`,
	"sink": `Exit status:
  0  stopped by a signal
  2  usage error
  3  could not listen or write
`,
}

// setUsage makes -h print the synopsis, the flags and the exit statuses.
func setUsage(fs *flag.FlagSet, synopsis string) {
	statuses := commandExitStatuses[fs.Name()]
	if fs.Name() == "send" {
		statuses = exitStatuses
	}
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s\n\nFlags:\n", synopsis)
		// PrintDefaults names each flag with one dash; the README and the
		// error messages use two (the flag package takes either).
		var defaults strings.Builder
		fs.SetOutput(&defaults)
		fs.PrintDefaults()
		fs.SetOutput(w)
		for _, line := range strings.SplitAfter(defaults.String(), "\n") {
			if strings.HasPrefix(line, "  -") {
				line = "  --" + line[len("  -"):]
			}
			fmt.Fprint(w, line)
		}
		fmt.Fprint(w, "\n"+statuses)
	}
}
