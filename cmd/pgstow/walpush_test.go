package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/repository"
)

// TestWALPushSeveralRepositories: with --repo given more than once, one
// key file serves the encrypted repositories and a plain one stays
// plain; an encrypted one without the key fails the push with one line
// naming it while the others get the file; the same repository twice and
// PGSTOW_REPO behave as documented.
func TestWALPushSeveralRepositories(t *testing.T) {
	dir := t.TempDir()
	key, err := encryption.ParseKey([]byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "repo.key")
	if err := os.WriteFile(keyFile, []byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// open returns the repository in d as pgstow reads it (encrypted with
	// key, or plain).
	open := func(d string, k *encryption.Key) *repository.Repository {
		t.Helper()
		store, err := file.Open(t.Context(), d)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		if k != nil {
			return repository.NewEncrypted(store, k)
		}
		return repository.New(store)
	}
	plainDir, encDir := filepath.Join(dir, "plain"), filepath.Join(dir, "enc")
	for _, d := range []string{plainDir, encDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := open(plainDir, nil).Bind(t.Context(), "7000000000000000001", 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := open(encDir, key).Bind(t.Context(), "7000000000000000001", 1<<20); err != nil {
		t.Fatal(err)
	}
	plain, enc := "file://"+plainDir, "file://"+encDir

	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    int
		msg     []string // stderr holds each, on one line
		inPlain bool     // the file then reads back from the plain repository
		inEnc   bool     // and from the encrypted one
	}{
		{"one key, a plain and an encrypted repository", []string{"--repo", plain, "--repo", enc, "--encryption-key-file", keyFile}, nil, exitOK, nil, true, true},
		{"no key: the encrypted one fails, named", []string{"--repo", plain, "--repo", enc}, nil, exitFailure, []string{"repository " + enc + ": ", "is encrypted"}, true, false},
		{"the same repository twice", []string{"--repo", plain, "--repo", plain + "/"}, nil, exitUsage, []string{"given twice"}, false, false},
		{"PGSTOW_REPO is one URL", nil, map[string]string{"PGSTOW_REPO": plain}, exitOK, nil, true, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "00000001000000000000000" + string(rune('1'+i))
			seg := filepath.Join(dir, name)
			data := bytes.Repeat([]byte{byte(i + 1)}, 1<<20)
			if err := os.WriteFile(seg, data, 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			code := run(append(append([]string{"wal-push", "--ahead", "0"}, tt.args...), seg), &out, &errb, func(k string) string { return tt.env[k] })
			msg := strings.TrimSpace(errb.String())
			if code != tt.want {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.want, msg)
			}
			for _, s := range tt.msg {
				if !strings.Contains(msg, s) || strings.Contains(msg, "\n") {
					t.Errorf("stderr %q: want one line containing %q", msg, s)
				}
			}
			for _, r := range []struct {
				repo *repository.Repository
				want bool
			}{{open(plainDir, nil), tt.inPlain}, {open(encDir, key), tt.inEnc}} {
				got, _, err := r.repo.FetchWAL(t.Context(), name)
				if ok := err == nil && bytes.Equal(got, data); ok != r.want {
					t.Errorf("%s holds %s as pushed: %v (%v), want %v", r.repo, name, ok, err, r.want)
				}
			}
		})
	}
}
