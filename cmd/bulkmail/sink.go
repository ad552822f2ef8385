package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/bulkmail/bulkmail/internal/capture"
)

// runSink runs the capture server in the foreground, so a job can be
// rehearsed with --smtp smtp://ADDR against it.
func runSink(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, `bulkmail sink [--listen ADDR] [--dir DIR]

Runs the capture server in the foreground to rehearse a job; nothing is relayed.`)
	listen := fs.String("listen", "127.0.0.1:2525", "address to listen on")
	dir := fs.String("dir", "outbox", "folder for the received messages (.eml)")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	srv, err := capture.Start(capture.Config{Addr: *listen, Dir: *dir})
	if err != nil {
		return withCode(exitAborted, err)
	}
	fmt.Fprintf(stderr, "bulkmail: capture server listening on %s; messages go to %s/; nothing is relayed. Send with --smtp smtp://%s\n", srv.Addr(), *dir, srv.Addr())
	fmt.Fprintf(stderr, "bulkmail: stop with Ctrl-C\n")
	<-ctx.Done()
	err = srv.Close()
	fmt.Fprintf(stderr, "bulkmail: capture server stopped after %d messages\n", len(srv.Messages()))
	return err
}
