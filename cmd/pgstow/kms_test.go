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

// TestKMSKeyRefusals: the KMS flags refuse what cannot work, in one line
// and before any KMS or backup is touched.
func TestKMSKeyRefusals(t *testing.T) {
	plain, encrypted := t.TempDir(), t.TempDir()
	keyHex := "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	key, err := encryption.ParseKey([]byte(keyHex))
	if err != nil {
		t.Fatal(err)
	}
	for dir, r := range map[string]func(*file.Store) *repository.Repository{
		plain:     func(s *file.Store) *repository.Repository { return repository.New(s) },
		encrypted: func(s *file.Store) *repository.Repository { return repository.NewEncrypted(s, key) },
	} {
		store, err := file.Open(t.Context(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := r(store).Bind(t.Context(), "7000000000000000001", 16<<20); err != nil {
			t.Fatal(err)
		}
		store.Close()
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(keyHex), 0o600); err != nil {
		t.Fatal(err)
	}
	// No KMS answers at this endpoint: a refusal must come before any call.
	const uri = "awskms://alias/x?region=eu-west-1&endpoint=http://127.0.0.1:1"
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"both keys", []string{"list", "--repo", "file://" + encrypted, "--encryption-key-file", keyFile, "--kms-key", uri}, nil, "give one"},
		{"both keys, one from the environment", []string{"list", "--repo", "file://" + encrypted, "--encryption-key-file", keyFile}, map[string]string{"PGSTOW_KMS_KEY": uri}, "give one"},
		{"plain repository", []string{"list", "--repo", "file://" + plain, "--kms-key", uri}, nil, "is not encrypted"},
		{"no copy of the pinned key", []string{"list", "--repo", "file://" + encrypted, "--kms-key", uri}, nil, "holds none under keys/"},
		{"bad URI", []string{"backup", "--repo", "file://" + t.TempDir(), "--pg", "host=/nonexistent", "--kms-key", "vault://k"}, nil, "unknown scheme"},
		{"rotate-key without a new key", []string{"repo", "rotate-key", "--repo", "file://" + encrypted}, nil, "needs --repo and --kms-key"},
		{"rotate-key of a plain repository", []string{"repo", "rotate-key", "--repo", "file://" + plain, "--kms-key", uri}, nil, "is not encrypted"},
		{"rotate-key with the wrong key file", []string{"repo", "rotate-key", "--repo", "file://" + encrypted, "--kms-key", uri, "--encryption-key-file", writeOtherKey(t)}, nil, "fingerprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb, func(k string) string { return tc.env[k] })
			msg := strings.TrimSpace(errb.String())
			if code == 0 || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Fatalf("exit %d, stderr %q: want a failure in one line saying %q", code, msg, tc.want)
			}
		})
	}
}

func writeOtherKey(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(p, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
