package sender

import (
	"bufio"
	"strings"
	"testing"
)

// splitEnhancedRef is splitEnhanced as it was first written, with
// strings.Split: the faster one must agree with it on every input.
func splitEnhancedRef(code int, text string) (enhanced, rest string) {
	field, rest, _ := strings.Cut(text, " ")
	parts := strings.Split(field, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || parts[0][0]-'0' != byte(code/100) {
		return "", text
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return "", text
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return "", text
			}
		}
	}
	return field, rest
}

func FuzzSplitEnhanced(f *testing.F) {
	for _, s := range []string{"2.1.5 Ok", "2.0.0", "5.7.1 no", "2.1.5x Ok", "2..5 x", "2.1.5.6 x", "2.1234.5 x", "2.1.", "4.7.28 slow", "x.1.5 a", "2.a.5 b", "2.1.5", "", " ", "2.1.55", "2.123.123 z", "25.1.5 z", "2.1.5\n2.1.5"} {
		for _, code := range []int{250, 421, 550, 354} {
			f.Add(code, s)
		}
	}
	f.Fuzz(func(t *testing.T, code int, text string) {
		e1, r1 := splitEnhanced(code, text)
		e2, r2 := splitEnhancedRef(code, text)
		if e1 != e2 || r1 != r2 {
			t.Fatalf("splitEnhanced(%d, %q) = %q, %q; want %q, %q", code, text, e1, r1, e2, r2)
		}
	})
}

// TestReplyCacheSameReplies reads the same stream with and without the
// cache: every reply, and every error, must be the same.
func TestReplyCacheSameReplies(t *testing.T) {
	stream := "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data\r\n250-first\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n" +
		"250\r\n250\r\n550 5.1.1 <a@b> no\r\n550 5.1.1 <a@b> no\r\n250 " + strings.Repeat("q", 200) + "\r\n250 " + strings.Repeat("q", 200) + "\r\n" +
		"250-2.0.0 a\r\n250 2.0.0 b\r\n250-2.0.0 a\r\n250 2.0.0 b\r\n250 ok\n250 ok\n" +
		"2x0 bad\r\n"
	read := func(cache *replyCache) (out []string) {
		r := bufio.NewReaderSize(strings.NewReader(stream), 16)
		for {
			rep, err := readReply(r, cache)
			if err != nil {
				return append(out, "error: "+err.Error())
			}
			out = append(out, rep.String()+"|"+rep.Enhanced+"|"+rep.Text)
		}
	}
	plain := read(nil)
	var c replyCache
	cached := read(&c)
	if strings.Join(plain, "\n") != strings.Join(cached, "\n") {
		t.Fatalf("with the cache:\n%s\nwithout:\n%s", strings.Join(cached, "\n"), strings.Join(plain, "\n"))
	}
	if len(c.m) == 0 {
		t.Fatal("nothing cached")
	}
	for line := range c.m {
		if len(line) > 3 && line[3] == '-' || len(line) > replyCacheLine {
			t.Errorf("cached %q", line)
		}
	}
}
