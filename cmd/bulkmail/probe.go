package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/bulkmail/bulkmail/internal/sender"
)

// runProbe is the operator's check before a big send: it walks through
// the conversation a send will have, prints every reply with its code,
// and sends no message (MAIL and RCPT are followed by RSET).
func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer, env *environment) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, `bulkmail probe --smtp URL [flags]

Walks through greeting, EHLO, TLS, AUTH, NOOP, HELP, VRFY and a test MAIL/RCPT
(followed by RSET) and prints every reply; sends no message.`)
	var sf smtpFlags
	sf.register(fs)
	from := fs.String("from", "", "envelope sender for the test MAIL FROM (default: postmaster@this host's name)")
	rcpt := fs.String("rcpt", "", "try MAIL FROM and RCPT TO for this address, then RSET (nothing is sent)")
	vrfy := fs.String("vrfy", "", "ask the server to VRFY this address")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if sf.url == "" {
		return usageErr("probe: --smtp is required")
	}
	cfg, err := sf.config(env)
	if err != nil {
		return err
	}
	if sf.trace != "" {
		trace, closeTrace, err := openTrace(sf.trace)
		if err != nil {
			return err
		}
		defer closeTrace()
		cfg.Trace = trace
	}
	for _, a := range []string{*from, *rcpt, *vrfy} {
		if strings.ContainsAny(a, "<> \t\r\n\x00") {
			return usageErr("probe: %q is not a bare address", a)
		}
	}
	step := func(name string, r sender.Reply, err error) {
		switch {
		case r.Code != 0:
			fmt.Fprintf(stdout, "%-9s %s\n", name, indent(r.String()))
		case err != nil:
			fmt.Fprintf(stdout, "%-9s error: %v\n", name, err)
		}
	}
	fmt.Fprintf(stdout, "%-9s %s (TLS policy %s, implicit TLS %v)\n", "server", cfg.Addr, cfg.TLS, cfg.ImplicitTLS)
	c, err := sender.Dial(ctx, cfg, 1)
	if err != nil {
		fmt.Fprintf(stdout, "%-9s failed: %v\n", "connect", err)
		var ae *sender.AuthError
		if errors.As(err, &ae) {
			return withCode(exitAborted, err)
		}
		return withCode(exitAborted, fmt.Errorf("probe: %w", err))
	}
	defer c.Close()
	step("greeting", c.Greeting(), nil)
	step("EHLO", c.Hello(), nil)
	exts := c.Extensions()
	names := make([]string, 0, len(exts))
	for k := range exts {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(stdout, "%-9s %s %s\n", "extension", k, exts[k])
	}
	if st := c.TLS(); st != nil {
		fmt.Fprintf(stdout, "%-9s %s, %s\n", "TLS", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		if len(st.PeerCertificates) > 0 {
			cert := st.PeerCertificates[0]
			fmt.Fprintf(stdout, "%-9s subject %q, issuer %q, valid until %s, names %v\n", "cert",
				cert.Subject.String(), cert.Issuer.String(), cert.NotAfter.Format("2006-01-02"), cert.DNSNames)
		}
	} else {
		fmt.Fprintf(stdout, "%-9s none: the conversation is in plain text\n", "TLS")
	}
	if cfg.Auth != nil {
		fmt.Fprintf(stdout, "%-9s accepted for user %q\n", "AUTH", cfg.Auth.Username)
	}
	r, err := c.Command(ctx, 2, "NOOP")
	step("NOOP", r, err)
	r, err = c.Command(ctx, 2, "HELP")
	step("HELP", r, err)
	if *vrfy != "" {
		r, err = c.Command(ctx, 2, "VRFY "+*vrfy)
		step("VRFY", r, err)
	}
	if *rcpt != "" {
		sender := *from
		if sender == "" {
			sender = "postmaster@" + env.hostname
		}
		r, err = c.Command(ctx, 2, "MAIL FROM:<"+sender+">")
		step("MAIL", r, err)
		if err == nil {
			r, err = c.Command(ctx, 2, "RCPT TO:<"+*rcpt+">")
			step("RCPT", r, err)
		}
		r, err = c.Command(ctx, 2, "RSET")
		step("RSET", r, err)
	}
	err = c.Quit()
	fmt.Fprintf(stdout, "%-9s %s\n", "QUIT", errText(err, "closed"))
	return nil
}

func indent(s string) string { return strings.ReplaceAll(s, " / ", "\n          ") }

func errText(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}
