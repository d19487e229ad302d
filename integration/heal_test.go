package integration

import (
	"encoding/json"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// TestDamagedChunkHeals: a chunk two backups share is damaged in the
// file:// store; verify names it on both; verify --repair moves it into
// quarantine/ and names both as unrestorable; the next backup uploads it
// again (deduplication no longer finds it), after which every backup
// verifies clean, the old ones through the same chunk id. Along the way,
// every chunk record carries the CRC32C of its stored bytes, deduplicated
// ones too (carried forward from the newest backup).
//
// PG15 only: the damage, quarantine and re-upload happen below the
// server, in pgstow's repository, and nothing in them depends on the
// major version.
func TestDamagedChunkHeals(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "2", "postgres")
	dir := t.TempDir()
	repoURL := "file://" + dir
	path := func(key string) string { return filepath.Join(dir, filepath.FromSlash(key)) }
	castagnoli := crc32.MakeTable(crc32.Castagnoli)

	ids := []string{cliBackup(t, c, repoURL)}
	c.Exec(t, "postgres", "UPDATE pgbench_branches SET bbalance = bbalance + 1")
	ids = append(ids, cliBackup(t, c, repoURL))
	bs := []*manifest.Backup{readManifest(t, dir, ids[0]), readManifest(t, dir, ids[1])}
	for _, b := range bs {
		for _, a := range b.Archives {
			for _, ch := range a.Chunks {
				data, err := os.ReadFile(path(repository.ChunkKey(ch.ID)))
				if err != nil {
					t.Fatal(err)
				}
				if ch.StoredCRC32C == nil || *ch.StoredCRC32C != crc32.Checksum(data, castagnoli) {
					t.Fatalf("backup %s chunk %s: recorded CRC32C %v, the stored bytes have %08x", b.ID, ch.ID[:12], ch.StoredCRC32C, crc32.Checksum(data, castagnoli))
				}
			}
		}
	}
	if bs[1].Totals.NewChunks >= bs[1].Totals.Chunks {
		t.Fatalf("the second backup deduplicated nothing (%d of %d chunks new)", bs[1].Totals.NewChunks, bs[1].Totals.Chunks)
	}

	// The largest chunk both reference: table data, unchanged, so the
	// next backup cuts it again.
	var shared manifest.ChunkRef
	for _, ch := range bs[0].Archives[0].Chunks {
		if chunkRefs(bs[1])[ch.ID] && ch.RawSize > shared.RawSize {
			shared = ch
		}
	}
	if shared.ID == "" {
		t.Fatal("the two backups share no chunk")
	}
	key := repository.ChunkKey(shared.ID)
	data, err := os.ReadFile(path(key))
	if err != nil {
		t.Fatal(err)
	}
	for i := len(data) / 2; i < len(data)/2+64 && i < len(data); i++ {
		data[i] ^= 0xa5
	}
	if err := os.WriteFile(path(key), data, 0o600); err != nil {
		t.Fatal(err)
	}

	v, r := runVerify(t, repoURL, "--all")
	if r.code != 1 || v.OK || len(v.Backups) != 2 {
		t.Fatalf("verify of the damaged repository: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, b := range v.Backups {
		if b.OK || len(b.Problems) != 1 || b.Problems[0].Kind != "corrupt-chunk" || b.Problems[0].Object != key {
			t.Fatalf("verify: backup %s: %+v; want one corrupt-chunk %s", b.ID, b.Problems, key)
		}
	}

	r = runCLI(t, 3*time.Minute, nil, "verify", "--repo", repoURL, "--all", "--repair", "--json")
	var rep struct {
		Repair struct {
			Quarantined []struct {
				Chunk        string   `json:"chunk"`
				To           string   `json:"quarantined_as"`
				Unrestorable []string `json:"unrestorable"`
			} `json:"quarantined"`
		} `json:"repair"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 1 || !strings.Contains(r.stderr, "1 damaged chunk(s) quarantined: take a backup") {
		t.Fatalf("verify --repair: exit %d, %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	q := rep.Repair.Quarantined
	if len(q) != 1 || q[0].Chunk != key || !slices.Equal(q[0].Unrestorable, ids) || !strings.HasPrefix(q[0].To, "quarantine/chunks/"+shared.ID+"/") {
		t.Fatalf("verify --repair reported %+v; want %s quarantined, backups %v unrestorable", q, key, ids)
	}
	if moved, err := os.ReadFile(path(q[0].To)); err != nil || string(moved) != string(data) {
		t.Fatalf("the quarantined copy %s: %v; holds the damaged bytes: %v", q[0].To, err, string(moved) == string(data))
	}
	if _, err := os.Stat(path(key)); !os.IsNotExist(err) {
		t.Fatalf("%s after the repair: %v, want gone", key, err)
	}
	v, r = runVerify(t, repoURL, "--all", "--quick")
	for _, b := range v.Backups {
		if r.code != 1 || len(b.Problems) != 1 || b.Problems[0].Kind != "missing-chunk" || b.Problems[0].Object != key {
			t.Fatalf("quick verify after the repair: exit %d, backup %s: %+v; want %s missing", r.code, b.ID, b.Problems, key)
		}
	}
	// The text form names the backups too.
	r = runCLI(t, 3*time.Minute, nil, "verify", "--repo", repoURL, "--all", "--quick", "--repair")
	if r.code != 1 || strings.Contains(r.stdout, "quarantined ") {
		t.Fatalf("a second repair moved something (a missing chunk is not damaged): exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	cliBackup(t, c, repoURL)
	if _, err := os.Stat(path(key)); err != nil {
		t.Fatalf("the backup after the repair did not store %s again: %v", key, err)
	}
	v, r = runVerify(t, repoURL, "--all")
	if r.code != 0 || !v.OK || len(v.Backups) != 3 {
		t.Fatalf("verify after the healing backup: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(path(q[0].To)); err != nil {
		t.Fatalf("the quarantined copy is gone after the backup: %v", err)
	}
}
