package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

// A repair that cannot take the lock still prints the verification's
// verdicts, text or JSON, before its error, with the usual exit status.
func TestVerifyRepairFailurePrintsVerdicts(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	store, err := file.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	repo := repository.New(store)
	b, _ := repotest.Commit(t, repo, repotest.Spec{ID: "20260102T030000Z",
		Archives: []repotest.Archive{{Name: "base.tar", Members: repotest.BaseMembers(1)}}})
	key := repository.ChunkKey(b.Archives[0].Chunks[0].ID)
	path := filepath.Join(dir, filepath.FromSlash(key))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	gc, err := repo.TakeLease(ctx, repository.LockPrune, repository.LeaseOptions{Command: "gc"})
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Release(ctx)

	for _, tc := range []struct {
		name  string
		flags []string
		check func(out string) bool
	}{
		{"text", nil, func(out string) bool {
			return strings.Contains(out, b.ID+"  BROKEN") && strings.Contains(out, repositoryKeyLine(key))
		}},
		{"json", []string{"--json"}, func(out string) bool {
			var rep struct {
				OK      bool `json:"ok"`
				Backups []struct {
					Problems []struct{ Kind, Object string }
				} `json:"backups"`
			}
			return json.Unmarshal([]byte(out), &rep) == nil && !rep.OK && len(rep.Backups) == 1 &&
				len(rep.Backups[0].Problems) == 1 && rep.Backups[0].Problems[0].Object == key
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"verify", "--repair", "--lock-wait", "100ms", "--repo", "file://" + dir}, tc.flags...)
			code := run(args, &out, &errb, func(string) string { return "" })
			if code != exitFailure || !strings.Contains(errb.String(), "locked") || !tc.check(out.String()) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, the verdict printed, the lock named", code, out.String(), errb.String(), exitFailure)
			}
		})
	}
}

// repositoryKeyLine is how a text verdict names a corrupt chunk.
func repositoryKeyLine(key string) string { return "corrupt-chunk " + key + ": " }
