package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/integration/pgtest"
)

// TestRootBackupKeepsArchiving: archive_command runs wal-push as the
// server's user into a file:// repository that user owns, and a backup
// runs as root into the same repository (root's cron). Archiving must go
// on without a single failure afterwards, and wal-fetch as the server's
// user must read the WAL root stored. Both orders are tried: the backup
// creating the repository (root writes pgstow.json) and the archiver
// creating it first. Not run as root, the test checks the same with one
// user, which still proves the backup and the archiver share the
// repository.
func TestRootBackupKeepsArchiving(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Log("not root: the backup and the server run as the same user")
	}
	for _, major := range pgtest.Majors() {
		for _, archiveFirst := range []bool{false, true} {
			name := fmt.Sprintf("pg%d/backup-first", major)
			if archiveFirst {
				name = fmt.Sprintf("pg%d/archive-first", major)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				testRootBackupKeepsArchiving(t, major, archiveFirst)
			})
		}
	}
}

func testRootBackupKeepsArchiving(t *testing.T, major int, archiveFirst bool) {
	repoDir := filepath.Join(pgtest.TempDir(t), "repo")
	if err := os.Mkdir(repoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	chownServerUser(t, repoDir)
	repoURL := "file://" + repoDir
	handToServerUser(t, filepath.Dir(pgstowBin))
	c := pgtest.Start(t, pgtest.Options{Major: major, Conf: []string{
		"archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push --repo %s --log-level warn %%p'", pgstowBin, repoURL),
	}})
	c.Exec(t, "postgres", "CREATE TABLE t (id int, round int)")

	// switchAndWait writes a little, completes the segment and waits
	// until the archiver has stored it, failing at the first failed
	// attempt with the server's reason.
	switchAndWait := func(round int) {
		t.Helper()
		c.Exec(t, "postgres", fmt.Sprintf("INSERT INTO t SELECT g, %d FROM generate_series(1, 1000) g", round))
		last := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
		pgtest.Eventually(t, 2*time.Minute, "the archiver to store "+last, func() bool {
			row := c.Query(t, "postgres", "SELECT failed_count, coalesce(last_failed_wal, ''), coalesce(last_archived_wal, '') >= '"+last+"' FROM pg_stat_archiver")[0]
			if row[0] != "0" {
				log, _ := os.ReadFile(filepath.Join(c.Dir, "server.log"))
				t.Fatalf("archive_command failed %s times (last on %s); server log:\n%s", row[0], row[1], tail(string(log), 30))
			}
			return row[2] == "t"
		})
	}

	if archiveFirst {
		switchAndWait(0)
	}
	repo := openFileRepo(t, repoDir)
	b, err := backup.Run(t.Context(), repo, backupOpts(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.WAL) == 0 {
		t.Fatal("the backup stored no WAL")
	}
	for round := 1; round <= 3; round++ {
		switchAndWait(round)
	}
	if got := c.Query(t, "postgres", "SELECT failed_count FROM pg_stat_archiver")[0][0]; got != "0" {
		t.Fatalf("pg_stat_archiver.failed_count = %s, want 0", got)
	}

	// The backup's WAL, stored by root, read back as the server's user
	// (as restore_command would).
	out := pgtest.TempDir(t)
	for _, seg := range b.WAL {
		dest := filepath.Join(out, seg.Name)
		if outb, err := runAsServerUser(t.Context(), time.Minute, pgstowBin, "wal-fetch", "--repo", repoURL, seg.Name, dest); err != nil {
			t.Fatalf("wal-fetch %s as the server user: %v\n%s", seg.Name, err, outb)
		}
		data, err := os.ReadFile(dest)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != seg.SHA256 {
			t.Fatalf("wal-fetch %s as the server user wrote other bytes than the backup stored", seg.Name)
		}
	}

	// Nothing in the repository is left to root.
	if os.Geteuid() == 0 {
		err := filepath.WalkDir(repoDir, func(p string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid == 0 || st.Gid == 0 {
				t.Errorf("%s belongs to %d:%d after the root-run backup", p, st.Uid, st.Gid)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
