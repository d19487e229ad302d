package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/repository"
)

func writeKeyFile(t *testing.T, dir string) string {
	t.Helper()
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "repo.key")
	if err := os.WriteFile(p, []byte(hex.EncodeToString(k[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// filesContaining lists the files under dir whose bytes contain marker.
func filesContaining(t *testing.T, dir, marker string) []string {
	t.Helper()
	var out []string
	for _, k := range repoKeys(t, dir) {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(k)))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(marker)) {
			out = append(out, k)
		}
	}
	return out
}

func flipByte(t *testing.T, path string) (undo func()) {
	t.Helper()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(orig)
	bad[len(bad)/2] ^= 0x01
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	return func() { _ = os.WriteFile(path, orig, 0o600) }
}

// TestEncryptedRepository: an encrypted repository round-trips backup,
// restore (with WAL fetched by the server through wal-fetch) and start;
// no object holds plaintext that a plain repository of the same data
// shows; object names differ from the plain ones; a missing or wrong key
// is refused; and a flipped byte in a chunk, a WAL segment, PostgreSQL's
// manifest or pgstow's manifest is detected.
func TestEncryptedRepository(t *testing.T) {
	t.Parallel()
	const marker = "pgstow-plaintext-marker"
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "1", "postgres")
	c.Exec(t, "postgres", "CREATE TABLE secrets AS SELECT '"+marker+"-' || g AS v FROM generate_series(1, 2000) g")
	want := seedBeforeBackup(t, c)
	// The server user runs restore_command: it must reach the binary, the
	// repository and the key.
	enc, plain := filepath.Join(pgtest.TempDir(t), "enc"), t.TempDir()
	keyDir := pgtest.TempDir(t)
	keyFile := writeKeyFile(t, keyDir)
	encURL := "file://" + enc
	key := []string{"--encryption-key-file", keyFile}

	id := cliBackup(t, c, encURL, key...)
	cliBackup(t, c, "file://"+plain)
	if got := filesContaining(t, plain, marker); len(got) == 0 {
		t.Fatal("the plain repository does not show the marker: the test cannot see plaintext")
	}
	if got := filesContaining(t, enc, marker); len(got) != 0 {
		t.Fatalf("plaintext in the encrypted repository: %v", got)
	}
	plainKeys := repoKeys(t, plain)
	for _, k := range repoKeys(t, enc) {
		if strings.HasPrefix(k, repository.ChunksPrefix) && slices.Contains(plainKeys, k) {
			t.Fatalf("chunk %s has the same name encrypted and plain: names reveal content", k)
		}
	}
	var cfg manifest.Repo
	if data, err := os.ReadFile(filepath.Join(enc, repository.RepoKey)); err != nil || json.Unmarshal(data, &cfg) != nil || cfg.Encryption == nil || cfg.Encryption.Algorithm != "AES-256-GCM" {
		t.Fatalf("the repository configuration does not record the encryption: %+v (%v)", cfg, err)
	}

	// The key is required, and must be the right one.
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		says string
	}{
		{"no key", []string{"list", "--repo", encURL}, nil, "is encrypted"},
		{"wrong key", []string{"list", "--repo", encURL, "--encryption-key-file", writeKeyFile(t, t.TempDir())}, nil, "fingerprint"},
		{"key for a plain repository", []string{"list", "--repo", "file://" + plain, "--encryption-key-file", keyFile}, nil, "is not encrypted"},
		{"backup with no key", []string{"backup", "--repo", encURL, "--pg", c.DSN("postgres")}, nil, "is encrypted"},
	} {
		if r := runCLI(t, time.Minute, tc.env, tc.args...); r.code != 1 || !strings.Contains(r.stderr, tc.says) {
			t.Errorf("%s: exit %d, want 1 saying %q:\n%s", tc.name, r.code, tc.says, r.stderr)
		}
	}
	// The key from the environment works as the flag does.
	if r := runCLI(t, time.Minute, []string{"PGSTOW_ENCRYPTION_KEY_FILE=" + keyFile}, "show", "latest", "--repo", encURL); r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Fatalf("show with the key from the environment: exit %d\n%s", r.code, r.stderr)
	}
	if v, r := runVerify(t, encURL, append([]string{"--all"}, key...)...); r.code != 0 || !v.OK {
		t.Fatalf("verify of the encrypted repository: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// Restore, with the server fetching WAL through wal-fetch and the key.
	target := filepath.Join(pgtest.TempDir(t), "restored")
	if r := runCLI(t, 3*time.Minute, nil, append([]string{"restore", "--repo", encURL, "-D", target, "--wal", "fetch"}, key...)...); r.code != 0 {
		t.Fatalf("restore: exit %d: %s", r.code, r.stderr)
	}
	conf, _ := os.ReadFile(filepath.Join(target, "postgresql.auto.conf"))
	if !strings.Contains(string(conf), "--encryption-key-file") {
		t.Fatalf("restore_command lacks the key file:\n%s", conf)
	}
	handToServerUser(t, target, enc, keyDir, filepath.Dir(pgstowBin))
	rc := restoreChecks(t, 15, target, "-n") // the WAL is fetched, not in pg_wal/
	if got := fingerprint(t, rc); got != want {
		t.Fatalf("restored %s, want %s", got, want)
	}
	if got := rc.Query(t, "postgres", "SELECT count(*) FROM secrets")[0][0]; got != "2000" {
		t.Fatalf("restored %s secrets rows, want 2000", got)
	}
	rc.Stop(t)

	// Tampering with any stored object is detected.
	b := readManifestWithKey(t, encURL, keyFile, id)
	chunk := filepath.Join(enc, filepath.FromSlash(repository.ChunkKey(b.Archives[0].Chunks[0].ID)))
	wal := filepath.Join(enc, filepath.FromSlash(repository.WALKey(b.WAL[0].Name)))
	pgm := filepath.Join(enc, filepath.FromSlash(repository.PGManifestKey(id)))
	man := filepath.Join(enc, filepath.FromSlash(repository.BackupManifestKey(id)))
	for _, tc := range []struct {
		name, path, kind string
	}{
		{"chunk", chunk, "corrupt-chunk"},
		{"WAL segment", wal, "corrupt-wal"},
		{"backup_manifest", pgm, "backup-manifest"},
		{"manifest.json", man, "manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer flipByte(t, tc.path)()
			v, r := runVerify(t, encURL, append([]string{"--all"}, key...)...)
			if r.code != 1 || v.OK || len(v.Backups) != 1 || len(v.Backups[0].Problems) == 0 || v.Backups[0].Problems[0].Kind != tc.kind ||
				!strings.Contains(v.Backups[0].Problems[0].Detail, "authentication failed") {
				t.Fatalf("verify with a flipped byte in the %s: exit %d\n%s", tc.name, r.code, r.stdout)
			}
		})
	}
	// The one plain object, the configuration, is authenticated too.
	cfgPath := filepath.Join(enc, repository.RepoKey)
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(orig, []byte(`"created": "`)) + len(`"created": "`) + 3 // a digit of the year: still valid JSON
	changed := bytes.Clone(orig)
	changed[i] ^= 0x01
	if err := os.WriteFile(cfgPath, changed, 0o600); err != nil {
		t.Fatal(err)
	}
	undo := func() { _ = os.WriteFile(cfgPath, orig, 0o600) }
	if r := runCLI(t, time.Minute, nil, append([]string{"list", "--repo", encURL}, key...)...); r.code != 1 || !strings.Contains(r.stderr, "has been changed") {
		t.Errorf("list with a flipped byte in %s: exit %d: %s", repository.RepoKey, r.code, r.stderr)
	}
	undo()
	defer flipByte(t, chunk)()
	r := runCLI(t, time.Minute, nil, append([]string{"restore", "--repo", encURL, "-D", filepath.Join(t.TempDir(), "x")}, key...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "is corrupt") || !strings.Contains(r.stderr, "authentication failed") {
		t.Fatalf("restore from a tampered chunk: exit %d: %s", r.code, r.stderr)
	}
}

// readManifestWithKey reads a manifest through the library, which
// decrypts it with the key.
func readManifestWithKey(t *testing.T, repoURL, keyFile, id string) *manifest.Backup {
	t.Helper()
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	k, err := encryption.ParseKey(data)
	if err != nil {
		t.Fatal(err)
	}
	store, err := file.Open(t.Context(), strings.TrimPrefix(repoURL, "file://"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	b, err := repository.NewEncrypted(store, k).Backup(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
