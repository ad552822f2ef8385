package main

import (
	"flag"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/bulkmail/bulkmail/internal/merge"
)

// pathFlags name files; in a job file they are relative to the job file,
// so a crontab line works from any directory.
var pathFlags = map[string]bool{
	"list": true, "template": true, "html": true, "result": true, "journal": true,
	"outbox": true, "inline-dir": true, "trace": true, "suppress": true, "password-file": true, "token-file": true,
}

// applyJobFile sets every flag the job file names that the command line
// did not: flags override the job file, except a list flag (--suppress),
// whose entries from both count. Keys are flag names (with '-' or
// '_'); values are TOML strings, numbers or booleans, or arrays of strings
// for a list flag. Secrets are refused:
// they come from the environment or files only.
func applyJobFile(fs *flag.FlagSet, path string) error {
	var values map[string]any
	_, err := toml.DecodeFile(path, &values)
	if err != nil {
		return usageErr("--job %s: %v", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	dir := filepath.Dir(path)
	for key, v := range values {
		name := strings.ReplaceAll(strings.ToLower(key), "_", "-")
		if name == "password" || name == "token" || strings.Contains(name, "secret") {
			return usageErr("--job %s: %q does not belong in a job file; use $BULKMAIL_SMTP_PASSWORD or --password-file", path, key)
		}
		if name == "job" || fs.Lookup(name) == nil {
			return usageErr("--job %s: unknown setting %q", path, key)
		}
		_, repeatable := fs.Lookup(name).Value.(*fileList)
		if set[name] && !repeatable {
			continue
		}
		// A list flag (--suppress) given on the command line too keeps
		// the job file's entries as well: suppression lists only add.
		if list, ok := v.([]any); ok {
			// An array, for a flag that may be given several times.
			if !repeatable {
				return usageErr("--job %s: %q takes one value, not a list", path, key)
			}
			for _, item := range list {
				s, ok := item.(string)
				if !ok {
					return usageErr("--job %s: %q: want a list of strings", path, key)
				}
				if pathFlags[name] && s != "" && !filepath.IsAbs(s) {
					s = filepath.Join(dir, s)
				}
				if err := fs.Set(name, s); err != nil {
					return usageErr("--job %s: %s: %v", path, key, err)
				}
			}
			continue
		}
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case int64:
			s = strconv.FormatInt(x, 10)
		case float64:
			s = strconv.FormatFloat(x, 'f', -1, 64)
		case bool:
			s = strconv.FormatBool(x)
		default:
			return usageErr("--job %s: %q: want a string, number or boolean", path, key)
		}
		if pathFlags[name] && s != "" && !filepath.IsAbs(s) {
			s = filepath.Join(dir, s)
		}
		if err := fs.Set(name, s); err != nil {
			return usageErr("--job %s: %s: %v", path, key, err)
		}
	}
	return nil
}

// shard selects a deterministic part of a list, so that several machines
// (a Kubernetes Indexed Job, a Slurm array) can each send one part with
// their own journal and result file.
type shard struct {
	index, count int // index in [0, count)
}

func parseShard(s string) (shard, error) {
	if s == "" {
		return shard{0, 1}, nil
	}
	i, n, ok := strings.Cut(s, "/")
	index, err1 := strconv.Atoi(i)
	count, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || count < 1 || index < 0 || index >= count {
		return shard{}, usageErr("--shard %q: want i/n with 0 <= i < n, e.g. 0/4", s)
	}
	return shard{index, count}, nil
}

// contains reports whether a row belongs to this shard: by a hash of its
// address, so duplicates of one address land in the same shard and are
// still sent once; a row without a valid address goes by its number.
func (s shard) contains(rec merge.Recipient) bool {
	if s.count <= 1 {
		return true
	}
	if rec.Address == "" {
		return rec.Row%s.count == s.index
	}
	h := fnv.New64a()
	h.Write([]byte(merge.AddressKey(rec.Address)))
	return h.Sum64()%uint64(s.count) == uint64(s.index)
}

func (s shard) String() string { return fmt.Sprintf("%d/%d", s.index, s.count) }
