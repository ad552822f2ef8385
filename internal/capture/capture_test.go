package capture_test

import (
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkmail/bulkmail/internal/capture"
)

// dial opens a plain SMTP conversation with s and says EHLO.
func dial(t *testing.T, s *capture.Server) *textproto.Conn {
	t.Helper()
	c, err := textproto.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	cmd(t, c, 250, "EHLO client.example")
	return c
}

// cmd sends one command and checks the reply's code; it returns the text.
func cmd(t *testing.T, c *textproto.Conn, want int, format string, args ...any) string {
	t.Helper()
	id, err := c.Cmd(format, args...)
	if err != nil {
		t.Fatal(err)
	}
	c.StartResponse(id)
	defer c.EndResponse(id)
	code, text, err := c.ReadResponse(want)
	if err != nil {
		t.Fatalf("%s: got %d %q, want %d", strings.Fields(format)[0], code, text, want)
	}
	return text
}

func send(t *testing.T, c *textproto.Conn, from, to, body string) string {
	t.Helper()
	cmd(t, c, 250, "MAIL FROM:<%s>", from)
	cmd(t, c, 250, "RCPT TO:<%s>", to)
	cmd(t, c, 354, "DATA")
	w := c.DotWriter()
	w.Write([]byte(body))
	w.Close()
	_, text, err := c.ReadResponse(250)
	if err != nil {
		t.Fatalf("end of data: %v", err)
	}
	return text
}

// TestCaptureStoresWhatItAccepts checks the capture server's record of a
// message against what went over the wire: the envelope, the data with
// dot-stuffing undone, the queue id in the 250 reply and in the .eml file
// name, and the envelope headers the file starts with.
func TestCaptureStoresWhatItAccepts(t *testing.T) {
	dir := t.TempDir()
	s, err := capture.Start(capture.Config{Dir: dir, KeepInMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := dial(t, s)
	body := "Subject: hi\r\n\r\n.a line that starts with a dot\r\nbye\r\n"
	text := send(t, c, "news@example.com", "ada@example.org", body)
	cmd(t, c, 250, "RSET")
	send(t, c, "news@example.com", "grace@example.org", "Subject: two\r\n\r\nx\r\n")
	cmd(t, c, 221, "QUIT")

	msgs := s.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages stored, want 2", len(msgs))
	}
	m := msgs[0]
	if m.From != "news@example.com" || len(m.To) != 1 || m.To[0] != "ada@example.org" {
		t.Errorf("envelope %q -> %q", m.From, m.To)
	}
	if string(m.Data) != body {
		t.Errorf("data %q, want %q", m.Data, body)
	}
	if m.QueueID == "" || text != "2.0.0 Ok: queued as "+m.QueueID && text != "Ok: queued as "+m.QueueID {
		t.Errorf("reply %q does not carry queue id %q", text, m.QueueID)
	}
	if !strings.Contains(filepath.Base(m.File), m.QueueID) {
		t.Errorf("file %s is not named by queue id %s", m.File, m.QueueID)
	}
	file, err := os.ReadFile(m.File)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(m.File); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf(".eml file mode %v, want 0600: it holds a recipient's data", fi.Mode().Perm())
	}
	want := "Return-Path: <news@example.com>\r\nX-Original-To: <ada@example.org>\r\n" + body
	if string(file) != want {
		t.Errorf(".eml file:\n%q\nwant\n%q", file, want)
	}
	// Each file is written under a hidden name and renamed into place, so
	// a killed server leaves no cut .eml; nothing else may stay behind.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != filepath.Base(msgs[0].File) || names[1] != filepath.Base(msgs[1].File) {
		t.Errorf("folder holds %q, want the two messages' files", names)
	}
	if conns := s.Conns(); len(conns) != 1 || conns[0].Messages != 2 {
		t.Errorf("conns %+v, want one carrying 2 messages", conns)
	}
}

// TestCaptureNumbersOnAfterEarlierFiles: a server started on a folder that
// holds an earlier run's messages numbers its own after them, so that the
// files sort in the order they were received.
func TestCaptureNumbersOnAfterEarlierFiles(t *testing.T) {
	dir := t.TempDir()
	// Only names as the server writes them count: not a note someone
	// saved there, nor a number that would overflow or sort wrongly.
	for _, name := range []string{"000001-AAAAAAAAAAAA.eml", "000012-BBBBBBBBBBBB.eml", "notes.txt", "000099-not-eml.txt",
		"999999-NOTE.eml", "9223372036854775807-x.eml", "20261126-backup.eml"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "000500-CCCCCCCCCCCC.eml"), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := capture.Start(capture.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := dial(t, s)
	send(t, c, "news@example.com", "ada@example.org", "Subject: hi\r\n\r\nx\r\n")
	cmd(t, c, 221, "QUIT")
	if msgs := s.Messages(); len(msgs) != 1 || !strings.HasPrefix(filepath.Base(msgs[0].File), "000013-") {
		t.Fatalf("stored %+v, want one file numbered 000013", msgs)
	}
}

// TestCaptureRefusals checks that the hooks' refusals reach the client
// with their codes, enhanced codes and text, and that nothing refused is
// stored.
func TestCaptureRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  capture.Config
		// the first command refused, and its reply
		verb     string
		wantCode int
		wantText string
	}{
		{
			name: "RCPT refused by the hook",
			cfg: capture.Config{Rcpt: func(to string) *capture.Reply {
				return &capture.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user " + to}
			}},
			verb: "RCPT", wantCode: 550, wantText: "5.1.1 no such user bob@example.org",
		},
		{
			name: "data refused by the hook",
			cfg: capture.Config{Data: func(*capture.Message) *capture.Reply {
				return &capture.Reply{Code: 452, Enhanced: "4.3.1", Text: "disk full"}
			}},
			verb: "DATA", wantCode: 452, wantText: "4.3.1 disk full",
		},
		{
			name: "MAIL before AUTH",
			cfg:  capture.Config{Users: map[string]string{"u": "p"}},
			verb: "MAIL", wantCode: 530, wantText: "5.7.0 Authentication required",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := capture.Start(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			c := dial(t, s)
			var code int
			var text string
			step := func(verb, line string, ok int) bool {
				id, err := c.Cmd("%s", line)
				if err != nil {
					t.Fatal(err)
				}
				c.StartResponse(id)
				code, text, err = c.ReadResponse(ok)
				c.EndResponse(id)
				return verb != tc.verb && err == nil
			}
			if step("MAIL", "MAIL FROM:<a@example.com>", 250) && step("RCPT", "RCPT TO:<bob@example.org>", 250) &&
				step("DATA-start", "DATA", 354) {
				w := c.DotWriter()
				w.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
				w.Close()
				code, text, _ = c.ReadResponse(250)
			}
			if code != tc.wantCode || tc.wantText != "" && text != tc.wantText {
				t.Errorf("%s: got %d %q, want %d %q", tc.verb, code, text, tc.wantCode, tc.wantText)
			}
			if n := len(s.Messages()); n != 0 {
				t.Errorf("%d messages stored after a refusal, want 0", n)
			}
		})
	}
}
