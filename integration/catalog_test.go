package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

var committedRE = regexp.MustCompile(`backup (\d{8}T\d{6}Z) committed`)

// cliBackup takes a backup with the CLI and returns its id.
func cliBackup(t *testing.T, c *pgtest.Cluster, repoURL string, extra ...string) string {
	t.Helper()
	args := append([]string{"backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--chunk-size", "1MB"}, extra...)
	r := runCLI(t, 5*time.Minute, nil, args...)
	m := committedRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("backup exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	return m[1]
}

// readManifest reads a committed manifest straight from a file:// repository.
func readManifest(t *testing.T, dir, id string) *manifest.Backup {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(repository.BackupManifestKey(id))))
	if err != nil {
		t.Fatal(err)
	}
	b, err := manifest.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// chunkRefs returns the set of chunk ids a backup references.
func chunkRefs(b *manifest.Backup) map[string]bool {
	m := map[string]bool{}
	for _, a := range b.Archives {
		for _, c := range a.Chunks {
			m[c.ID] = true
		}
	}
	return m
}

// repoKeys lists every object of a file:// repository, as keys.
func repoKeys(t *testing.T, dir string) []string {
	t.Helper()
	var keys []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil && p != dir && errors.Is(err, fs.ErrNotExist) {
			// The store removes a directory it emptied (locks/ when a
			// lease goes) while a backup may still be running.
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && p != dir {
				return filepath.SkipDir // the store's temporary directory
			}
			return nil
		}
		keys = append(keys, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

type verifyJSON struct {
	OK      bool `json:"ok"`
	Backups []struct {
		ID       string `json:"id"`
		OK       bool   `json:"ok"`
		Mode     string `json:"mode"`
		Chunks   int    `json:"chunks"`
		Files    int    `json:"files_checked"`
		Problems []struct {
			Kind   string `json:"kind"`
			Object string `json:"object"`
			Detail string `json:"detail"`
		} `json:"problems"`
	} `json:"backups"`
}

func runVerify(t *testing.T, repoURL string, args ...string) (verifyJSON, cliResult) {
	t.Helper()
	r := runCLI(t, 3*time.Minute, nil, append([]string{"verify", "--repo", repoURL, "--json"}, args...)...)
	var v verifyJSON
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("verify %v printed no JSON (exit %d): %v\n%s\n%s", args, r.code, err, r.stdout, r.stderr)
	}
	return v, r
}

// TestCatalogShowVerify: show and verify on a repository with several
// backups and WAL, first clean, then with a chunk missing, a chunk
// corrupted in place, a chunk truncated and a WAL segment missing, each
// named on the backups it breaks and on no other.
func TestCatalogShowVerify(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 17})
	c.Pgbench(t, "-i", "-s", "2", "postgres")
	dir := t.TempDir()
	repoURL := "file://" + dir
	var ids []string
	for i := range 3 {
		c.Exec(t, "postgres", fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid %% 7 = %d", i))
		ids = append(ids, cliBackup(t, c, repoURL, "--label", fmt.Sprintf("b%d", i)))
	}

	r := runCLI(t, time.Minute, nil, "show", "latest", "--repo", repoURL)
	for _, want := range []string{ids[2], "label", "b2", "PostgreSQL", "17.", "LSN range", "WAL needed", "shared with earlier backups", "archive base.tar", "system identifier"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Fatalf("show latest (exit %d) lacks %q:\n%s\n%s", r.code, want, r.stdout, r.stderr)
		}
	}
	r = runCLI(t, time.Minute, nil, "show", ids[1], "--repo", repoURL, "--json")
	r0 := r
	var shown map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || shown["id"] != ids[1] || shown["deduplicated_bytes"].(float64) <= 0 || shown["wal_first"] == "" {
		t.Fatalf("show --json: %v: %s", err, r.stdout)
	}
	// show, restore and PostgreSQL's backup_manifest count the same
	// files: regular files, with directories and symlinks apart.
	target := filepath.Join(t.TempDir(), "restored")
	r = runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "--backup", ids[1], "-D", target, "--json")
	var restored struct {
		Files int `json:"files"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &restored); r.code != 0 || err != nil {
		t.Fatalf("restore --json: exit %d, %v: %s %s", r.code, err, r.stdout, r.stderr)
	}
	pgmData, err := os.ReadFile(filepath.Join(target, "backup_manifest"))
	if err != nil {
		t.Fatal(err)
	}
	pgm, err := manifest.ParsePGManifest(pgmData)
	if err != nil {
		t.Fatal(err)
	}
	var counts struct {
		Files       int `json:"files"`
		Directories int `json:"directories"`
	}
	_ = json.Unmarshal([]byte(r0.stdout), &counts)
	if counts.Files != restored.Files || counts.Files != len(pgm.Files) || counts.Directories == 0 {
		t.Fatalf("show counts %d files and %d directories, restore %d files, backup_manifest %d files", counts.Files, counts.Directories, restored.Files, len(pgm.Files))
	}
	if !strings.Contains(runCLI(t, time.Minute, nil, "show", ids[1], "--repo", repoURL).stdout, fmt.Sprintf("%d regular files, ", restored.Files)) {
		t.Errorf("show's text does not say the regular files restore counts (%d)", restored.Files)
	}
	if r := runCLI(t, time.Minute, nil, "show", "20200101T000000Z", "--repo", repoURL); r.code != 1 || !strings.Contains(r.stderr, "no committed backup 20200101T000000Z") {
		t.Fatalf("show of a missing backup: exit %d: %s", r.code, r.stderr)
	}

	for _, mode := range [][]string{{"--all"}, {"--all", "--quick"}} {
		v, r := runVerify(t, repoURL, mode...)
		if r.code != 0 || !v.OK || len(v.Backups) != 3 {
			t.Fatalf("verify %v of a clean repository: exit %d\n%s\n%s", mode, r.code, r.stdout, r.stderr)
		}
		for _, b := range v.Backups {
			if !b.OK || b.Chunks == 0 || (b.Mode == "full" && b.Files == 0) {
				t.Fatalf("verify %v: %+v", mode, b)
			}
		}
	}
	if r := runCLI(t, 3*time.Minute, nil, "verify", "--repo", repoURL); r.code != 0 || !strings.Contains(r.stdout, ids[2]+"  OK  full") {
		t.Fatalf("verify (latest): exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// Break one object of each kind, each referenced by one backup only.
	bs := []*manifest.Backup{readManifest(t, dir, ids[0]), readManifest(t, dir, ids[1]), readManifest(t, dir, ids[2])}
	onlyIn := func(i int) []string {
		var out []string
		for id := range chunkRefs(bs[i]) {
			if !chunkRefs(bs[(i+1)%3])[id] && !chunkRefs(bs[(i+2)%3])[id] {
				out = append(out, id)
			}
		}
		slices.Sort(out)
		if len(out) < 2 {
			t.Fatalf("backup %s has %d chunks of its own; the test needs 2", ids[i], len(out))
		}
		return out
	}
	path := func(key string) string { return filepath.Join(dir, filepath.FromSlash(key)) }
	missing := repository.ChunkKey(onlyIn(1)[0])
	if err := os.Remove(path(missing)); err != nil {
		t.Fatal(err)
	}
	corrupt := repository.ChunkKey(onlyIn(2)[0])
	data, err := os.ReadFile(path(corrupt))
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x55 // same size: only a full verify can see it
	if err := os.WriteFile(path(corrupt), data, 0o600); err != nil {
		t.Fatal(err)
	}
	truncated := repository.ChunkKey(onlyIn(2)[1])
	if err := os.Truncate(path(truncated), 10); err != nil {
		t.Fatal(err)
	}
	var walMissing string
	for _, w := range bs[0].WAL {
		if !slices.ContainsFunc(bs[1].WAL, func(s manifest.WALSegment) bool { return s.Name == w.Name }) {
			walMissing = repository.WALKey(w.Name)
		}
	}
	if walMissing == "" {
		t.Fatalf("backups %s and %s share all their WAL", ids[0], ids[1])
	}
	if err := os.Remove(path(walMissing)); err != nil {
		t.Fatal(err)
	}

	type want struct{ kind, object string }
	for _, tc := range []struct {
		args []string
		want map[string][]want // by backup id
	}{
		{[]string{"--all"}, map[string][]want{
			ids[0]: {{"missing-wal", walMissing}},
			ids[1]: {{"missing-chunk", missing}},
			ids[2]: {{"corrupt-chunk", corrupt}, {"corrupt-chunk", truncated}},
		}},
		{[]string{"--all", "--quick"}, map[string][]want{
			ids[0]: {{"missing-wal", walMissing}},
			ids[1]: {{"missing-chunk", missing}},
			ids[2]: {{"corrupt-chunk", truncated}},
		}},
	} {
		v, r := runVerify(t, repoURL, tc.args...)
		if r.code != 1 || v.OK || !strings.Contains(r.stderr, "3 of 3 backup(s) have problems") {
			t.Fatalf("verify %v of a damaged repository: exit %d\n%s\n%s", tc.args, r.code, r.stdout, r.stderr)
		}
		for _, b := range v.Backups {
			var got []want
			for _, p := range b.Problems {
				got = append(got, want{p.Kind, p.Object})
				if p.Kind == "missing-chunk" && !strings.Contains(p.Detail, "holds") {
					t.Errorf("verify %v: a missing chunk should name the files it holds: %s", tc.args, p.Detail)
				}
			}
			slices.SortFunc(got, func(a, b want) int { return strings.Compare(a.object, b.object) })
			w := slices.Clone(tc.want[b.ID])
			slices.SortFunc(w, func(a, b want) int { return strings.Compare(a.object, b.object) })
			if !slices.Equal(got, w) {
				t.Errorf("verify %v: backup %s problems %v, want %v", tc.args, b.ID, got, w)
			}
		}
	}
	// Text output names every problem too.
	r = runCLI(t, 3*time.Minute, nil, "verify", ids[2], "--repo", repoURL)
	if r.code != 1 || !strings.Contains(r.stdout, "BROKEN (2 problem(s))") || !strings.Contains(r.stdout, corrupt) || !strings.Contains(r.stdout, truncated) {
		t.Fatalf("verify %s: exit %d\n%s\n%s", ids[2], r.code, r.stdout, r.stderr)
	}
}

// TestRetainLastThenGC: after delete --retain-last 1 and gc, the
// repository holds exactly what the remaining backup and its WAL need, and
// that backup still restores and starts with the same data.
func TestRetainLastThenGC(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "2", "postgres")
	dir := t.TempDir()
	repoURL := "file://" + dir
	for i := range 3 {
		c.Exec(t, "postgres", fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid %% 5 = %d", i))
		if i == 2 {
			seedBeforeBackup(t, c)
		}
		cliBackup(t, c, repoURL)
	}
	want := fingerprint(t, c)

	// A backup killed mid-stream leaves chunks no manifest references.
	cmd := exec.Command(pgstowRaceBin, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--chunk-size", "1MB", "--max-rate", "2MB")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	before := len(repoKeys(t, dir))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	leaseGlob := filepath.Join(dir, "locks", "backup-*.json")
	pgtest.Eventually(t, 2*time.Minute, "the backup to store chunks under its lease", func() bool {
		leases, _ := filepath.Glob(leaseGlob)
		return len(leases) == 1 && len(repoKeys(t, dir)) > before+3
	})
	killErr := cmd.Process.Kill()
	cmd.Wait()
	// Its lease stays until it expires, five minutes later by the store's
	// clock, which for file:// is the file's modification time: age it.
	leases, _ := filepath.Glob(leaseGlob)
	if len(leases) != 1 {
		t.Fatalf("the killed backup (kill: %v) left %d leases, want 1; its log:\n%s", killErr, len(leases), stderr.String())
	}
	old := time.Now().Add(-10 * time.Minute)
	if err := os.Chtimes(leases[0], old, old); err != nil {
		t.Fatal(err)
	}

	// Dry run first: it must name exactly what the real run removes.
	r := runCLI(t, time.Minute, nil, "delete", "--retain-last", "1", "--dry-run", "--json", "--repo", repoURL)
	var dry struct {
		Backups []struct {
			ID   string `json:"id"`
			Keep bool   `json:"keep"`
		} `json:"backups"`
		Manifests, Chunks, WAL struct {
			Keys []string `json:"keys"`
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &dry); err != nil || r.code != 0 {
		t.Fatalf("delete --dry-run: exit %d: %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if len(dry.Backups) != 3 || dry.Backups[0].Keep || dry.Backups[1].Keep || !dry.Backups[2].Keep {
		t.Fatalf("delete --retain-last 1 --dry-run decided %+v", dry.Backups)
	}
	keep := dry.Backups[2].ID
	afterDry := repoKeys(t, dir)
	if len(afterDry) < before {
		t.Fatalf("the dry run removed objects")
	}
	r = runCLI(t, time.Minute, nil, "delete", "--retain-last", "1", "--repo", repoURL)
	if r.code != 0 || !strings.Contains(r.stdout, "removed") {
		t.Fatalf("delete --retain-last 1: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	afterDelete := repoKeys(t, dir)
	var removed []string
	for _, k := range afterDry {
		if !slices.Contains(afterDelete, k) && !strings.HasPrefix(k, repository.LocksPrefix) {
			removed = append(removed, k)
		}
	}
	dryKeys := slices.Concat(dry.Manifests.Keys, dry.Chunks.Keys, dry.WAL.Keys)
	slices.Sort(dryKeys)
	if !slices.Equal(removed, dryKeys) {
		t.Fatalf("the dry run named %d objects, the real run removed %d:\ndry:  %v\nreal: %v", len(dryKeys), len(removed), dryKeys, removed)
	}

	r = runCLI(t, time.Minute, nil, "gc", "--grace", "0s", "--repo", repoURL)
	if r.code != 0 {
		t.Fatalf("gc: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	b := readManifest(t, dir, keep)
	wantKeys := []string{repository.RepoKey, repository.BackupManifestKey(keep), repository.PGManifestKey(keep)}
	for id := range chunkRefs(b) {
		wantKeys = append(wantKeys, repository.ChunkKey(id))
	}
	for _, w := range b.WAL {
		wantKeys = append(wantKeys, repository.WALKey(w.Name))
	}
	// WAL archived after the backup (here by the killed one) is kept for
	// point-in-time recovery; nothing older than its first segment is.
	got := repoKeys(t, dir)
	first := b.WAL[0].Name
	for _, k := range got {
		if name, ok := repository.WALNameFromKey(k); ok && name > b.WAL[len(b.WAL)-1].Name {
			wantKeys = append(wantKeys, k)
		} else if ok && name < first {
			t.Errorf("gc left WAL %s, older than the remaining backup's first segment %s", name, first)
		}
	}
	slices.Sort(wantKeys)
	if !slices.Equal(got, wantKeys) {
		var extra, lacking []string
		for _, k := range got {
			if !slices.Contains(wantKeys, k) {
				extra = append(extra, k)
			}
		}
		for _, k := range wantKeys {
			if !slices.Contains(got, k) {
				lacking = append(lacking, k)
			}
		}
		t.Fatalf("after delete and gc the repository holds %d objects, the remaining backup needs %d; extra %v, missing %v", len(got), len(wantKeys), extra, lacking)
	}
	if v, r := runVerify(t, repoURL, "--all"); r.code != 0 || !v.OK || len(v.Backups) != 1 {
		t.Fatalf("verify after gc: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	target := filepath.Join(pgtest.TempDir(t), "restored")
	if r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "-D", target); r.code != 0 {
		t.Fatalf("restore: exit %d: %s", r.code, r.stderr)
	}
	handToServerUser(t, target)
	rc := restoreChecks(t, 15, target)
	if got := fingerprint(t, rc); got != want {
		t.Fatalf("restored data %s, want %s", got, want)
	}
}

// TestCatalogUnderConcurrency: a backup runs while delete and gc run
// (each of the two at the same time too), twenty times. Every backup must
// commit a manifest whose every chunk and WAL segment exists, though
// delete removes the backup it deduplicated against. Without the leases
// (docs/catalog.md) this loses chunks.
func TestCatalogUnderConcurrency(t *testing.T) {
	t.Parallel()
	const iterations = 20
	c := pgtest.Start(t, pgtest.Options{Major: 17})
	c.Pgbench(t, "-i", "-s", "1", "postgres")
	dir := t.TempDir()
	repoURL := "file://" + dir
	prev := cliBackup(t, c, repoURL)
	overlapped := 0
	for i := range iterations {
		c.Exec(t, "postgres", fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid %% 50 = %d", i))
		// Slowed down so the deletes land while it deduplicates.
		cmd := exec.Command(pgstowBin, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast",
			"--chunk-size", "1MB", "--max-rate", "16MB")
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pgtest.Eventually(t, time.Minute, "the backup's lease", func() bool {
			m, _ := filepath.Glob(filepath.Join(dir, "locks", "backup-*.json"))
			return len(m) > 0
		})
		var wg sync.WaitGroup
		results := make([]cliResult, 2)
		for j, args := range [][]string{
			{"delete", prev, "--repo", repoURL, "--json"},
			{"gc", "--grace", "0s", "--repo", repoURL, "--json"},
		} {
			wg.Go(func() { results[j] = runCLI(t, 2*time.Minute, nil, args...) })
		}
		wg.Wait()
		for _, r := range results {
			if r.code != 0 {
				t.Fatalf("iteration %d: exit %d\n%s\n%s", i, r.code, r.stdout, r.stderr)
			}
			var rep struct {
				Running []string `json:"running_backups"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("iteration %d: %v: %s", i, err, r.stdout)
			}
			if len(rep.Running) > 0 {
				overlapped++
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("iteration %d: backup failed: %v\n%s", i, err, out.String())
		}
		m := committedRE.FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("iteration %d: backup printed %s", i, out.String())
		}
		if v, r := runVerify(t, repoURL, m[1], "--quick"); r.code != 0 || !v.OK {
			t.Fatalf("iteration %d: backup %s committed with objects missing:\n%s\n%s", i, m[1], r.stdout, r.stderr)
		}
		prev = m[1]
	}
	if overlapped < iterations {
		t.Fatalf("delete or gc saw the running backup in %d of %d runs; the test did not exercise the overlap", overlapped, 2*iterations)
	}
	t.Logf("delete and gc overlapped a running backup in %d of %d runs", overlapped, 2*iterations)
	// With nothing running, gc takes what was deferred, and the one
	// backup left still verifies in full.
	if r := runCLI(t, time.Minute, nil, "gc", "--grace", "0s", "--repo", repoURL); r.code != 0 {
		t.Fatalf("final gc: exit %d: %s", r.code, r.stderr)
	}
	if v, r := runVerify(t, repoURL, "--all"); r.code != 0 || !v.OK || len(v.Backups) != 1 {
		t.Fatalf("final verify: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}
