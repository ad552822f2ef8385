package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkmail/bulkmail/internal/capture"
)

// review3: the default is --journal-sync message: no reservation in the
// journal, and the run header carries the boot; batch reserves.
func TestReview3DefaultIsMessage(t *testing.T) {
	for _, mode := range []string{"", "message", "batch"} {
		dir := t.TempDir()
		srv := startCapture(t, capture.Config{})
		list := writeList(t, dir, 5)
		tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
		result := filepath.Join(dir, "r.csv")
		args := sendArgs(srv, list, tmpl, result)
		if mode != "" {
			args = append(args, "--journal-sync", mode)
		}
		env := testEnv()
		env.boot = "boot-1"
		if code, _, se := runCLIEnv(t, env, args...); code != exitOK {
			t.Fatalf("%q: exit %d\n%s", mode, code, se)
		}
		b, _ := os.ReadFile(result + ".journal")
		has := bytes.Contains(b, []byte(`"t":"reserve"`))
		if has != (mode == "batch") {
			t.Errorf("--journal-sync %q: reserve records %v\n%s", mode, has, b)
		}
		if !bytes.Contains(b, []byte(`"boot":"boot-1"`)) {
			t.Errorf("%q: no boot in the run header", mode)
		}
	}
}
