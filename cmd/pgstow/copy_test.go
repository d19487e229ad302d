package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/copier"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

// TestCopyUsage: a wrong call is a usage error on one line, and creates
// no destination.
func TestCopyUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"copy", "--repo", "SRC", "--to", "DST"}, "nothing to copy"},
		{[]string{"copy", "--repo", "SRC", "--to", "DST", "--all", "latest"}, "one way"},
		{[]string{"copy", "--repo", "SRC", "--to", "DST", "--all", "--retain-last", "2"}, "one way"},
		{[]string{"copy", "--repo", "SRC", "--to", "DST", "--retain-last", "0"}, "--retain-last"},
		{[]string{"copy", "--repo", "SRC", "--to", "DST", "--retain-within", "soon"}, "--retain-within"},
		{[]string{"copy", "--repo", "SRC", "--to", "DST", "yesterday"}, "not a backup id"},
		{[]string{"copy", "--repo", "SRC", "--to", "DST", "--all", "--parallel", "0"}, "--parallel"},
		{[]string{"copy", "--repo", "SRC", "--all"}, "--to"},
		{[]string{"copy", "--repo", "SRC", "--to", "nope://x", "--all"}, "nope"},
		{[]string{"copy", "--repo", "SRC", "--to", "DST", "--all", "--to-plain", "--to-encryption-key-file", "/nonexistent.key"}, "--to-plain contradicts"},
	} {
		t.Run(strings.Join(tc.args[3:], " "), func(t *testing.T) {
			dir := t.TempDir()
			srcDir := filepath.Join(dir, "src")
			if err := os.Mkdir(srcDir, 0o755); err != nil {
				t.Fatal(err)
			}
			sub := strings.NewReplacer("SRC", "file://"+srcDir, "DST", "file://"+filepath.Join(dir, "dst"))
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = sub.Replace(a)
			}
			var out, errb bytes.Buffer
			if code := run(args, &out, &errb, func(string) string { return "" }); code != exitUsage {
				t.Fatalf("exit %d, want %d: %s", code, exitUsage, errb.String())
			}
			if msg := strings.TrimSpace(errb.String()); strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tc.want) {
				t.Fatalf("stderr %q, want one line with %q", msg, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "dst")); err == nil {
				t.Fatal("the destination was created before the usage error")
			}
		})
	}
}

// TestCopyCommand copies a backup between file:// repositories, the
// destination encrypted with a key from the environment, and prints the
// result as JSON; a second run finds it there.
func TestCopyCommand(t *testing.T) {
	dir := t.TempDir()
	srcDir, dstDir := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := os.Mkdir(srcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	fs, err := file.Open(t.Context(), srcDir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := repotest.Commit(t, repository.New(fs), repotest.Spec{ID: "20260102T030000Z",
		Archives: []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(1)}}})
	keyFile := filepath.Join(dir, "dst.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PGSTOW_TO_ENCRYPTION_KEY_FILE": keyFile, "PGSTOW_TO_REPO": "file://" + dstDir}
	// A dry run creates nothing, not even the directory.
	var out, errb bytes.Buffer
	if code := run([]string{"copy", "--repo", "file://" + srcDir, "--all", "--dry-run"}, &out, &errb, func(k string) string { return env[k] }); code != 1 || !strings.Contains(errb.String(), "a dry run does not") {
		t.Fatalf("dry run to a missing directory: exit %d: %s", code, errb.String())
	}
	if _, err := os.Stat(dstDir); err == nil {
		t.Fatal("a dry run created the destination directory")
	}
	for i, want := range []string{"copied", "present"} {
		var out, errb bytes.Buffer
		code := run([]string{"copy", "--repo", "file://" + srcDir, "latest", "--json", "--progress", "never"}, &out, &errb, func(k string) string { return env[k] })
		if code != 0 {
			t.Fatalf("run %d: exit %d: %s", i+1, code, errb.String())
		}
		var res copier.Result
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("run %d: %v in %s", i+1, err, out.String())
		}
		if len(res.Backups) != 1 || res.Backups[0].ID != b.ID || res.Backups[0].Status != want || !res.Rekeyed {
			t.Fatalf("run %d: %+v, want backup %s %s, rekeyed", i+1, res, b.ID, want)
		}
	}
	// The destination is encrypted: without its key it is refused.
	out.Reset()
	errb.Reset()
	if code := run([]string{"list", "--repo", "file://" + dstDir}, &out, &errb, func(string) string { return "" }); code != 1 || !strings.Contains(errb.String(), "is encrypted") {
		t.Fatalf("list of the encrypted destination without a key: exit %d: %s", code, errb.String())
	}
}

// TestCopyEncryptedToNewPlain: from an encrypted source, forgetting the
// destination's key is refused in one line naming --to-plain, and
// creates nothing there; with --to-plain the destination is made plain,
// and later copies into it need no flag.
func TestCopyEncryptedToNewPlain(t *testing.T) {
	dir := t.TempDir()
	srcDir, dstDir := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := os.Mkdir(srcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	fs, err := file.Open(t.Context(), srcDir)
	if err != nil {
		t.Fatal(err)
	}
	keyText := []byte(strings.Repeat("cd", 32))
	key, err := encryption.ParseKey(keyText)
	if err != nil {
		t.Fatal(err)
	}
	repotest.Commit(t, repository.NewEncrypted(fs, key), repotest.Spec{ID: "20260102T030000Z",
		Archives: []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(1)}}})
	keyFile := filepath.Join(dir, "src.key")
	if err := os.WriteFile(keyFile, keyText, 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == "PGSTOW_ENCRYPTION_KEY_FILE" {
			return keyFile
		}
		return ""
	}
	for _, tc := range []struct {
		name  string
		extra []string
		code  int
		want  string
	}{
		{"no destination key", nil, 1, "--to-plain"},
		{"no destination key, dry run", []string{"--dry-run"}, 1, "--to-plain"},
		{"--to-plain", []string{"--to-plain"}, 0, "copied"},
		{"existing plain destination", nil, 0, "already at the destination"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.MkdirAll(dstDir, 0o755); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			args := append([]string{"copy", "--repo", "file://" + srcDir, "--to", "file://" + dstDir, "latest", "--progress", "never"}, tc.extra...)
			code := run(args, &out, &errb, env)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, errb.String())
			}
			if tc.code != 0 {
				if msg := strings.TrimSpace(errb.String()); strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tc.want) {
					t.Fatalf("stderr %q, want one line with %q", msg, tc.want)
				}
				if _, err := os.Stat(filepath.Join(dstDir, repository.RepoKey)); err == nil {
					t.Fatalf("the refused copy created %s", repository.RepoKey)
				}
				return
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("stdout %q, want %q", out.String(), tc.want)
			}
			// The destination is plain: list reads it without a key.
			var lout, lerr bytes.Buffer
			if code := run([]string{"list", "--repo", "file://" + dstDir}, &lout, &lerr, func(string) string { return "" }); code != 0 {
				t.Fatalf("list of the plain destination: exit %d: %s", code, lerr.String())
			}
		})
	}
}
