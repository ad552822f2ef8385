package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/bulkmail/bulkmail/internal/merge"
	"github.com/bulkmail/bulkmail/internal/report"
	"github.com/bulkmail/bulkmail/internal/sender"
)

// environment is what a run takes from the process: the clock, names and
// secrets. Tests replace it to get stable output.
type environment struct {
	now       func() time.Time
	hostname  string
	messageID func() string
	getenv    func(string) string
	// boot identifies this boot of the machine (report.BootID): a journal
	// that knows it spares most fsyncs (see report.Journal).
	boot string
}

func defaultEnv() *environment {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &environment{
		now:      time.Now,
		hostname: host,
		// "" lets merge pick: a random id at this host's name when it is
		// fully qualified, else at the sender's domain.
		messageID: func() string { return "" },
		getenv:    os.Getenv,
		boot:      report.BootID(),
	}
}

// listFlags are the flags that say how to read a list and a template,
// shared by send and preview.
type listFlags struct {
	list         string
	template     string
	html         string
	attachColumn string
	inlineDir    string
	emailColumn  string
	delimiter    string
	encoding     string
	sheet        string
	envelopeFrom string
	unsubscribe  string
}

// register adds the flags of the list and of the message (send, preview).
func (f *listFlags) register(fs *flag.FlagSet) {
	f.registerList(fs)
	fs.StringVar(&f.template, "template", "", "message template: headers, a blank line, the body (required by send and preview)")
	fs.StringVar(&f.html, "html", "", "optional html/template file: sends multipart/alternative")
	fs.StringVar(&f.attachColumn, "attach-column", "", "column naming files to attach (';'-separated, relative to the list)")
	fs.StringVar(&f.inlineDir, "inline-dir", "", "folder of images the HTML shows with cid:NAME (a row attachment named NAME wins)")
	fs.StringVar(&f.envelopeFrom, "envelope-from", "", "MAIL FROM address for bounces (default: the From header's address)")
	fs.StringVar(&f.unsubscribe, "unsubscribe", "", "List-Unsubscribe URL template, e.g. 'https://x.org/u?e={{.email}}' (RFC 8058 one-click for https)")
}

// registerList adds only the flags that say how to read the list: all
// report needs to rebuild a result.
func (f *listFlags) registerList(fs *flag.FlagSet) {
	fs.StringVar(&f.list, "list", "", "recipient list, .csv or .xlsx")
	fs.StringVar(&f.emailColumn, "email-column", "email", "column holding each recipient's address")
	fs.StringVar(&f.delimiter, "delimiter", "", "CSV delimiter: ',', ';', 'tab' (default: detected)")
	fs.StringVar(&f.encoding, "encoding", "", "CSV character set: utf-8, utf-16, gb18030, gbk, shift_jis, windows-1252, latin1 (default utf-8)")
	fs.StringVar(&f.sheet, "sheet", "", "XLSX sheet name or 1-based index (default: the first with data)")
}

func (f *listFlags) listOptions() (merge.ListOptions, error) {
	opts := merge.ListOptions{EmailColumn: f.emailColumn, Encoding: f.encoding, Sheet: f.sheet}
	switch strings.ToLower(f.delimiter) {
	case "":
	case "tab", `\t`:
		opts.Delimiter = '\t'
	default:
		r := []rune(f.delimiter)
		if len(r) != 1 {
			return opts, usageErr("--delimiter %q: want one character or 'tab'", f.delimiter)
		}
		opts.Delimiter = r[0]
	}
	return opts, nil
}

// open opens the list and parses and binds the template, so that a column
// the template needs and the list lacks stops the run before anything is
// sent.
func (f *listFlags) open(env *environment, messageID func(row int) string) (*merge.List, *merge.Template, error) {
	if f.list == "" || f.template == "" {
		return nil, nil, usageErr("--list and --template are required")
	}
	lo, err := f.listOptions()
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := merge.ParseTemplate(f.template, merge.TemplateOptions{
		HTMLPath:     f.html,
		AttachColumn: f.attachColumn,
		InlineDir:    f.inlineDir,
		EnvelopeFrom: f.envelopeFrom,
		Unsubscribe:  f.unsubscribe,
		MessageID:    messageID,
		Now:          env.now,
	})
	if err != nil {
		return nil, nil, withCode(exitUsage, err)
	}
	list, err := merge.OpenList(f.list, lo)
	if err != nil {
		return nil, nil, withCode(exitUsage, err)
	}
	if err := tmpl.Bind(f.list, list.Header()); err != nil {
		list.Close()
		return nil, nil, withCode(exitUsage, err)
	}
	return list, tmpl, nil
}

// smtpFlags say how to reach the server, shared by send and probe.
type smtpFlags struct {
	url          string
	passwordFile string
	tokenFile    string
	authMech     string
	tlsMode      string
	tlsSkipCheck bool
	helo         string
	noPipelining bool
	noChunking   bool
	trace        string
	timeouts     sender.Timeouts
}

func (f *smtpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "smtp", "", "server: smtp://[user@]host[:port] (STARTTLS) or smtps://[user@]host[:port] (implicit TLS)")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the SMTP password (else $BULKMAIL_SMTP_PASSWORD); never on the command line")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding an OAuth2 token for XOAUTH2 (else $BULKMAIL_SMTP_TOKEN)")
	fs.StringVar(&f.authMech, "auth", "", "force an AUTH mechanism: PLAIN, LOGIN, CRAM-MD5, XOAUTH2 (default: best offered)")
	fs.StringVar(&f.tlsMode, "tls", "", "STARTTLS policy: required, opportunistic, none (default: required, opportunistic on loopback)")
	fs.BoolVar(&f.tlsSkipCheck, "tls-skip-verify", false, "do not verify the server's certificate (insecure; for test relays only)")
	fs.StringVar(&f.helo, "helo", "", "name to send with EHLO (default: this host's name if it is fully qualified, else its address literal)")
	fs.BoolVar(&f.noPipelining, "no-pipelining", false, "send one command at a time even where PIPELINING is offered")
	fs.BoolVar(&f.noChunking, "no-chunking", false, "use DATA even where CHUNKING is offered")
	fs.StringVar(&f.trace, "trace", "", "write the whole SMTP conversation to this file (AUTH redacted)")
	d := sender.DefaultTimeouts()
	fs.DurationVar(&f.timeouts.Connect, "timeout-connect", d.Connect, "TCP connect and TLS handshake")
	fs.DurationVar(&f.timeouts.Greeting, "timeout-greeting", d.Greeting, "waiting for the 220 greeting (RFC 5321 4.5.3.2.1)")
	fs.DurationVar(&f.timeouts.Command, "timeout-command", d.Command, "EHLO, STARTTLS, AUTH, RSET, NOOP, QUIT")
	fs.DurationVar(&f.timeouts.Mail, "timeout-mail", d.Mail, "MAIL FROM (4.5.3.2.2)")
	fs.DurationVar(&f.timeouts.Rcpt, "timeout-rcpt", d.Rcpt, "RCPT TO (4.5.3.2.3)")
	fs.DurationVar(&f.timeouts.DataInit, "timeout-data-init", d.DataInit, "DATA until 354 (4.5.3.2.4)")
	fs.DurationVar(&f.timeouts.DataBlock, "timeout-data-block", d.DataBlock, "each block of message data (4.5.3.2.5)")
	fs.DurationVar(&f.timeouts.DataTerm, "timeout-data-term", d.DataTerm, "final dot until its reply (4.5.3.2.6)")
}

// config turns the flags into a sender.Config. A missing password for a
// URL with a user name is an error; secrets only come from the
// environment or files.
func (f *smtpFlags) config(env *environment) (sender.Config, error) {
	u, err := url.Parse(f.url)
	if err != nil || u.Host == "" {
		return sender.Config{}, usageErr("--smtp %q: want smtp://[user@]host[:port] or smtps://...", f.url)
	}
	if _, set := u.User.Password(); set {
		return sender.Config{}, usageErr("--smtp: put the password in $BULKMAIL_SMTP_PASSWORD or --password-file, never in the URL")
	}
	cfg := sender.Config{
		LocalName:    f.helo,
		Timeouts:     f.timeouts,
		NoPipelining: f.noPipelining,
		NoChunking:   f.noChunking,
	}
	port := u.Port()
	switch strings.ToLower(u.Scheme) {
	case "smtp":
		if port == "" {
			port = "25"
		}
	case "smtps":
		cfg.ImplicitTLS = true
		if port == "" {
			port = "465"
		}
	default:
		return sender.Config{}, usageErr("--smtp %q: scheme must be smtp or smtps", f.url)
	}
	cfg.Addr = net.JoinHostPort(u.Hostname(), port)
	cfg.TLS = sender.TLSRequired
	if sender.IsLoopback(cfg.Addr) {
		cfg.TLS = sender.TLSOpportunistic
	}
	if f.tlsMode != "" {
		if cfg.TLS, err = sender.ParseTLSMode(f.tlsMode); err != nil {
			return sender.Config{}, usageErr("--tls: %v", err)
		}
	}
	cfg.TLSConfig = &tls.Config{ServerName: u.Hostname(), InsecureSkipVerify: f.tlsSkipCheck, MinVersion: tls.VersionTLS12}
	if user := u.User.Username(); user != "" {
		a := &sender.Auth{Username: user, Mechanism: strings.ToUpper(f.authMech)}
		if a.Password, err = secret(env, f.passwordFile, "BULKMAIL_SMTP_PASSWORD"); err != nil {
			return sender.Config{}, err
		}
		if a.Token, err = secret(env, f.tokenFile, "BULKMAIL_SMTP_TOKEN"); err != nil {
			return sender.Config{}, err
		}
		if a.Password == "" && a.Token == "" {
			return sender.Config{}, usageErr("--smtp names user %q but no password: set $BULKMAIL_SMTP_PASSWORD or --password-file", user)
		}
		cfg.Auth = a
	}
	if cfg.LocalName == "" && strings.Contains(env.hostname, ".") {
		// A bare host name ("vm") is no domain: relays that check EHLO
		// refuse it. Without a dotted name the sender uses its address
		// literal.
		cfg.LocalName = env.hostname
	}
	return cfg, nil
}

// secret reads a credential from a file or, failing that, the
// environment.
func secret(env *environment, file, variable string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usageErr("reading secret: %v", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return env.getenv(variable), nil
}

// parseRate reads "50/s", "600/m", "3600/h" or a bare number per second;
// "" or "0" means no limit.
func parseRate(s string) (rate.Limit, error) {
	if s == "" || s == "0" {
		return rate.Inf, nil
	}
	num, unit, _ := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 {
		return 0, usageErr("--rate %q: want e.g. 50/s, 600/m or 3600/h", s)
	}
	per := time.Second
	switch strings.ToLower(unit) {
	case "", "s", "sec", "second":
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	default:
		return 0, usageErr("--rate %q: unit must be s, m or h", s)
	}
	return rate.Limit(n / per.Seconds()), nil
}

// fmtCount formats n with a label, for the summary line.
func fmtCount(n int, label string) string { return fmt.Sprintf("%d %s", n, label) }

// openTrace opens (appending, mode 0600: it holds addresses) the file
// --trace names.
func openTrace(path string) (*sender.Trace, func() error, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, withCode(exitUsage, err)
	}
	return sender.NewTrace(f), f.Close, nil
}

// rowEmail is the address to show for a row: the normalised one, or what
// the cell held when it is not an address.
func rowEmail(rec merge.Recipient, emailIdx int) string {
	if rec.Address == "" && emailIdx < len(rec.Values) {
		return rec.Values[emailIdx]
	}
	return rec.Address
}
