// Command delayproxy forwards TCP connections to a target with a fixed
// delay in each direction, for scripts/bench-vs-smtp-source.sh. It prints
// the address it listens on as its first line of output and runs until
// SIGINT or SIGTERM.
//
//	go run ./scripts/delayproxy -target 127.0.0.1:2525 -delay 10ms
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bulkmail/bulkmail/internal/benchproxy"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("delayproxy: ")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	target := flag.String("target", "", "host:port to forward to (required)")
	delay := flag.Duration("delay", 10*time.Millisecond, "delay added in each direction")
	flag.Parse()
	if *target == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	p, err := benchproxy.Start(*listen, *target, *delay)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	p.Close()
}
