package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// TestKMSRepository: a repository whose data key is wrapped by AWS KMS
// (local-kms) backs up and restores with no key file anywhere; another
// KMS key, or the key once disabled, is refused with one line before any
// backup is read; rotate-key moves the repository to a new KMS key, after
// which the old one can be disabled, and whose alias can move; and a key-file repository gains a
// KMS-wrapped copy and then opens without its file.
func TestKMSRepository(t *testing.T) {
	t.Parallel()
	const marker = "pgstow-kms-plaintext-marker"
	kms := testserver.StartLocalKMS(t)
	keyA, keyB, keyC := kms.CreateKey(t), kms.CreateKey(t), kms.CreateKey(t)
	kms.CreateAlias(t, "pgstow-b", keyB)
	uri := func(key string) string {
		return "awskms://" + key + "?region=" + kms.Region + "&endpoint=" + kms.Endpoint
	}
	// The AWS SDK's default chain: credentials from the environment, and
	// local-kms's address for the commands not pinned to a key, which
	// never take the endpoint a stored copy records.
	env := []string{"AWS_ACCESS_KEY_ID=pgstowtest", "AWS_SECRET_ACCESS_KEY=pgstowtest", "AWS_EC2_METADATA_DISABLED=true", "AWS_ENDPOINT_URL_KMS=" + kms.Endpoint}
	run := func(t *testing.T, extraEnv []string, args ...string) cliResult {
		t.Helper()
		return runCLI(t, 3*time.Minute, append(append([]string{}, env...), extraEnv...), args...)
	}
	// refused runs a command that must fail with exit 1 and one line.
	refused := func(t *testing.T, says string, extraEnv []string, args ...string) {
		t.Helper()
		r := run(t, extraEnv, args...)
		msg := strings.TrimSpace(r.stderr)
		if r.code != 1 || !strings.Contains(msg, says) || strings.Contains(msg, "\n") {
			t.Fatalf("%v: exit %d, want 1 with one line saying %q:\n%s", args, r.code, says, r.stderr)
		}
		t.Logf("%v: %s", args[0], msg)
	}

	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Exec(t, "postgres", "CREATE TABLE secrets AS SELECT '"+marker+"-' || g AS v FROM generate_series(1, 2000) g")
	want := seedBeforeBackup(t, c)
	dir := t.TempDir()
	repoURL := "file://" + dir

	r := run(t, []string{"PGSTOW_KMS_KEY=" + uri(keyA)}, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--chunk-size", "1MB")
	m := committedRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("backup with --kms-key: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	id := m[1]
	var cfg manifest.Repo
	if data, err := os.ReadFile(filepath.Join(dir, repository.RepoKey)); err != nil || json.Unmarshal(data, &cfg) != nil || cfg.Encryption == nil {
		t.Fatalf("the repository is not recorded as encrypted: %+v (%v)", cfg, err)
	}
	copies := wrappedCopies(t, dir)
	if len(copies) != 1 || copies[0].KMS != uri(keyA) || copies[0].KeyFingerprint != cfg.Encryption.KeyFingerprint {
		t.Fatalf("wrapped copies after the first backup: %+v", copies)
	}
	if got := filesContaining(t, dir, marker); len(got) != 0 {
		t.Fatalf("plaintext in the KMS-keyed repository: %v", got)
	}

	// Opened with no key at all: the wrapped copy is found and unwrapped.
	if r := run(t, nil, "list", "--repo", repoURL); r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Fatalf("list through the wrapped key: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// Another KMS key, or no credentials, is refused.
	refused(t, "none is wrapped by", nil, "list", "--repo", repoURL, "--kms-key", uri("alias/pgstow-b"))
	refused(t, "no wrapped copy of the data key could be unwrapped", []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent"},
		"list", "--repo", repoURL)

	// Restore with no key file: the data comes back.
	target := filepath.Join(pgtest.TempDir(t), "restored")
	if r := run(t, nil, "restore", "--repo", repoURL, "-D", target); r.code != 0 {
		t.Fatalf("restore through the wrapped key: exit %d\n%s", r.code, r.stderr)
	}
	handToServerUser(t, target)
	rc := restoreChecks(t, 15, target)
	if got := fingerprint(t, rc); got != want {
		t.Fatalf("restored %s, want %s", got, want)
	}
	if got := rc.Query(t, "postgres", "SELECT count(*) FROM secrets")[0][0]; got != "2000" {
		t.Fatalf("restored %s secrets rows, want 2000", got)
	}
	rc.Stop(t)

	// A copy to a new repository keyed through another KMS key: the
	// destination gets its own data key, and opens with no key file.
	keyD := kms.CreateKey(t)
	dstDir := t.TempDir()
	if r := run(t, nil, "copy", "--repo", repoURL, "--to", "file://"+dstDir, "--all", "--to-kms-key", uri(keyD)); r.code != 0 {
		t.Fatalf("copy to a KMS-keyed destination: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if copies := wrappedCopies(t, dstDir); len(copies) != 1 || copies[0].KMS != uri(keyD) || copies[0].KeyFingerprint == cfg.Encryption.KeyFingerprint {
		t.Fatalf("wrapped copies at the destination: %+v", copies)
	}
	r = run(t, nil, "verify", "--repo", "file://"+dstDir, "--all", "--json")
	var v verifyJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || !v.OK || len(v.Backups) != 1 {
		t.Fatalf("verify of the copy through its wrapped key: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// Rotation to B (by its alias): a copy under B, A's removed; then A
	// can be disabled and the repository still opens.
	r = run(t, nil, "repo", "rotate-key", "--repo", repoURL, "--kms-key", uri("alias/pgstow-b"), "--json")
	var res struct {
		Added   struct{ Object, KMS string }
		Removed []struct{ Object, KMS string }
	}
	// A copy made through an alias records the key ARN it named.
	viaB := regexp.MustCompile(`^awskms://alias/pgstow-b\?endpoint=[^&]+&key=arn%3Aaws%3Akms%3A` + kms.Region + `%3A[0-9]{12}%3Akey%2F` + keyB + `&region=` + kms.Region + `$`)
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || !viaB.MatchString(res.Added.KMS) || len(res.Removed) != 1 || res.Removed[0].KMS != uri(keyA) {
		t.Fatalf("rotate-key: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if copies := wrappedCopies(t, dir); len(copies) != 1 || copies[0].KMS != res.Added.KMS {
		t.Fatalf("wrapped copies after rotation: %+v", copies)
	}
	kms.DisableKey(t, keyA)
	if r := run(t, nil, "show", id, "--repo", repoURL); r.code != 0 {
		t.Fatalf("show after rotation with the old key disabled: exit %d\n%s", r.code, r.stderr)
	}
	// The alias moves to another key (aws kms update-alias): the copy
	// made through it still opens, pinned by the alias or not.
	kms.UpdateAlias(t, "pgstow-b", kms.CreateKey(t))
	if r := run(t, nil, "show", id, "--repo", repoURL); r.code != 0 {
		t.Fatalf("show after the alias moved: exit %d\n%s", r.code, r.stderr)
	}
	if r := run(t, nil, "show", id, "--repo", repoURL, "--kms-key", uri("alias/pgstow-b")); r.code != 0 {
		t.Fatalf("show pinned by the alias after it moved: exit %d\n%s", r.code, r.stderr)
	}
	// Disabling the wrapping key locks the repository.
	kms.DisableKey(t, keyB)
	refused(t, "DisabledException", nil, "list", "--repo", repoURL)
	refused(t, "DisabledException", nil, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"))

	// A key-file repository gains a KMS-wrapped copy, and then opens
	// without the file.
	fileDir := t.TempDir()
	keyFile := writeKeyFile(t, t.TempDir())
	fileID := cliBackup(t, c, "file://"+fileDir, "--encryption-key-file", keyFile)
	refused(t, "is encrypted", nil, "list", "--repo", "file://"+fileDir)
	if r := run(t, nil, "repo", "rotate-key", "--repo", "file://"+fileDir, "--encryption-key-file", keyFile, "--kms-key", uri(keyC)); r.code != 0 || !strings.Contains(r.stdout, "added keys/") {
		t.Fatalf("rotate-key of a key-file repository: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, nil, "list", "--repo", "file://"+fileDir); r.code != 0 || !strings.Contains(r.stdout, fileID) {
		t.Fatalf("list of the key-file repository through its new wrapped copy: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// wrappedCopies reads the wrapped copies of a file:// repository's key.
func wrappedCopies(t *testing.T, dir string) []*manifest.WrappedKey {
	t.Helper()
	var out []*manifest.WrappedKey
	for _, k := range repoKeys(t, dir) {
		if !strings.HasPrefix(k, repository.KeysPrefix) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(k)))
		if err != nil {
			t.Fatal(err)
		}
		w, err := manifest.DecodeWrappedKey(data)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out = append(out, w)
	}
	return out
}
