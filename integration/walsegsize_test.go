package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// fileSHA256 streams a file, or its first n bytes (n >= 0), through
// SHA-256: a 256 MiB segment is not read into memory.
func fileSHA256(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if n >= 0 {
		r = io.LimitReader(f, n)
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// lz4SHA256 decompresses a stored object with the reference lz4 tool and
// returns the SHA-256 of what it wrote, so the stored format is checked by
// something other than pgstow.
func lz4SHA256(t *testing.T, object string) string {
	t.Helper()
	lz4, err := exec.LookPath("lz4")
	if err != nil {
		t.Fatalf("the lz4 CLI is needed to check the stored format (apt-get install lz4, or scripts/install-deps.sh): %v", err)
	}
	cmd := exec.CommandContext(t.Context(), lz4, "-dc", object)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	_, cerr := io.Copy(h, out)
	if err := cmd.Wait(); err != nil || cerr != nil {
		t.Fatalf("lz4 -dc %s: %v %v %s", object, err, cerr, stderr.Bytes())
	}
	return hex.EncodeToString(h.Sum(nil))
}

// walEndOf is where a zero-padded .partial file's WAL ends: after its last
// non-zero byte.
func walEndOf(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var end, off int64
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		if i := len(bytes.TrimRight(buf[:n], "\x00")); i > 0 {
			end = off + int64(i)
		}
		off += int64(n)
		if err == io.EOF {
			return end
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestLargeWALSegments: with 256 MiB WAL segments (initdb
// --wal-segsize=256) a backup streams its WAL, a restore embeds it and the
// restored server starts with every committed row; wal-push, wal-fetch
// (with prefetching) and wal-receive (with its .partial) move such
// segments byte for byte, as standard LZ4 frames. Every command stages
// only in the spool directory, and leaves it empty; a full one fails with
// a message saying so. (Memory is measured by hand, not asserted:
// docs/tuning.md.)
func TestLargeWALSegments(t *testing.T) {
	t.Parallel()
	const segMB = 256
	const segSize = segMB << 20
	major := pgtest.Majors()[0]
	c := pgtest.Start(t, pgtest.Options{Major: major, InitdbArgs: []string{fmt.Sprintf("--wal-segsize=%d", segMB)}})
	if got := c.Query(t, "postgres", "SHOW wal_segment_size")[0][0]; got != "256MB" {
		t.Fatalf("wal_segment_size is %s", got)
	}
	c.Pgbench(t, "-i", "-s", "2", "postgres")
	want := seedBeforeBackup(t, c)
	spool := t.TempDir()
	env := []string{"PGSTOW_SPOOL_DIR=" + spool}
	spoolEmpty := func(after string) {
		t.Helper()
		if entries, _ := os.ReadDir(spool); len(entries) != 0 {
			t.Fatalf("%s left %d files in the spool directory", after, len(entries))
		}
	}

	// Backup, with the WAL streamed; verify reads every segment back.
	repoDir := filepath.Join(pgtest.TempDir(t), "repo")
	repoURL := "file://" + repoDir
	r := runCLI(t, 5*time.Minute, env, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--progress", "never")
	m := committedRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("backup exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	spoolEmpty("backup")
	b := readManifest(t, repoDir, m[1])
	if b.WALSegmentSize != segSize || len(b.WAL) == 0 {
		t.Fatalf("manifest: segment size %d, %d WAL segments", b.WALSegmentSize, len(b.WAL))
	}
	for _, w := range b.WAL {
		object := filepath.Join(repoDir, filepath.FromSlash(repository.WALKey(w.Name)))
		if got := lz4SHA256(t, object); got != w.SHA256 {
			t.Fatalf("lz4 -d of %s gives sha256 %s, the manifest says %s", w.Name, got, w.SHA256)
		}
	}
	if r := runCLI(t, 5*time.Minute, env, "verify", "--repo", repoURL, "--json"); r.code != 0 {
		t.Fatalf("verify exited %d: %s %s", r.code, r.stdout, r.stderr)
	}

	// Restore, with the WAL embedded.
	target := filepath.Join(pgtest.TempDir(t), "data")
	if r := runCLI(t, 5*time.Minute, env, "restore", "--repo", repoURL, "-D", target, "--progress", "never"); r.code != 0 {
		t.Fatalf("restore exited %d: %s", r.code, r.stderr)
	}
	for _, w := range b.WAL {
		p := filepath.Join(target, "pg_wal", w.Name)
		if fi, err := os.Stat(p); err != nil || fi.Size() != segSize {
			t.Fatalf("embedded %s: %v (%d bytes)", w.Name, err, fi.Size())
		}
		if got := fileSHA256(t, p, -1); got != w.SHA256 {
			t.Fatalf("embedded %s has sha256 %s, the manifest says %s", w.Name, got, w.SHA256)
		}
	}
	if tmp, _ := filepath.Glob(filepath.Join(target, "pg_wal", ".*")); len(tmp) != 0 {
		t.Fatalf("temporary files left in pg_wal: %v", tmp)
	}
	rs := restoreChecks(t, major, target)
	if got := fingerprint(t, rs); got != want {
		t.Fatalf("committed_before: %s after restore, %s before", got, want)
	}
	rs.Stop(t)

	// Three complete segments of the source (pg_switch_wal returns once
	// the switched segment is written to its end).
	var segs []string
	for i := range 3 {
		c.Exec(t, "postgres", fmt.Sprintf("CREATE TABLE push%d AS SELECT g FROM generate_series(1, 20000) g", i))
		segs = append(segs, c.Query(t, "postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
		c.Exec(t, "postgres", "SELECT pg_switch_wal()")
	}
	local := func(name string) string { return filepath.Join(c.DataDir, "pg_wal", name) }
	sums := map[string]string{}
	for _, s := range segs {
		sums[s] = fileSHA256(t, local(s), -1)
	}

	// wal-push stores each as a standard LZ4 frame; again is fine; other
	// content under an archived name is refused.
	pushDir := filepath.Join(t.TempDir(), "push")
	pushURL := "file://" + pushDir
	for _, s := range segs {
		if r := runCLI(t, 3*time.Minute, env, "wal-push", "--repo", pushURL, local(s)); r.code != 0 {
			t.Fatalf("wal-push %s: exit %d %s", s, r.code, r.stderr)
		}
		if got := lz4SHA256(t, filepath.Join(pushDir, filepath.FromSlash(repository.WALKey(s)))); got != sums[s] {
			t.Fatalf("lz4 -d of the pushed %s differs from the server's file", s)
		}
	}
	if r := runCLI(t, 3*time.Minute, env, "wal-push", "--repo", pushURL, local(segs[0])); r.code != 0 {
		t.Fatalf("wal-push of an archived segment again: exit %d %s", r.code, r.stderr)
	}
	spoolEmpty("wal-push")
	other := filepath.Join(t.TempDir(), segs[1])
	data, err := os.ReadFile(local(segs[1]))
	if err != nil {
		t.Fatal(err)
	}
	data[segSize/2] ^= 0xff
	if err := os.WriteFile(other, data, 0o600); err != nil {
		t.Fatal(err)
	}
	data = nil
	if r := runCLI(t, 3*time.Minute, env, "wal-push", "--repo", pushURL, other); r.code != 1 || !strings.Contains(r.stderr, "differs") {
		t.Fatalf("wal-push of other content under %s: exit %d %s", segs[1], r.code, r.stderr)
	}
	// A spool directory with no room: a clear failure, nothing stored.
	full := mountTmpfs(t, 4096, false)
	if r := runCLI(t, 3*time.Minute, []string{"PGSTOW_SPOOL_DIR=" + full}, "wal-push", "--repo", "file://"+t.TempDir(), local(segs[0])); r.code != 1 || !strings.Contains(r.stderr, "spool directory is full") {
		t.Fatalf("wal-push with a full spool directory: exit %d %s", r.code, r.stderr)
	}

	// wal-fetch: the first with prefetching, the next from the prefetch
	// spool, the end of the archive as "not found".
	pgWAL := filepath.Join(t.TempDir(), "pg_wal")
	os.Mkdir(pgWAL, 0o700)
	dest := filepath.Join(pgWAL, "RECOVERYXLOG")
	for i, s := range segs {
		if r := runCLI(t, 3*time.Minute, env, "wal-fetch", "--repo", pushURL, "--prefetch", "2", s, dest); r.code != 0 {
			t.Fatalf("wal-fetch %s: exit %d %s", s, r.code, r.stderr)
		}
		if got := fileSHA256(t, dest, -1); got != sums[s] {
			t.Fatalf("wal-fetch %s: the file differs from the server's", s)
		}
		if i == 0 {
			if _, err := os.Stat(filepath.Join(pgWAL, "pgstow_prefetch", segs[1]+".pgstow")); err != nil {
				t.Fatalf("%s was not prefetched: %v", segs[1], err)
			}
		}
	}
	_, last, _ := manifest.ParseSegmentName(segs[2], segSize)
	if r := runCLI(t, time.Minute, env, "wal-fetch", "--repo", pushURL, manifest.SegmentName(1, last+1, segSize), dest); r.code != 1 {
		t.Fatalf("wal-fetch past the end: exit %d %s", r.code, r.stderr)
	}
	if tmp, _ := filepath.Glob(filepath.Join(pgWAL, ".*")); len(tmp) != 0 {
		t.Fatalf("temporary files left beside the destination: %v", tmp)
	}

	// wal-receive stores complete segments and, when stopped, the
	// unfinished one as .partial.
	recvDir := filepath.Join(t.TempDir(), "recv")
	recvURL := "file://" + recvDir
	recv := openFileRepo(t, recvDir)
	stopRecv := startReceiver(t, recvURL, c.DSN("postgres"), "--create-slot", "--spool-dir", spool)
	c.Exec(t, "postgres", "CREATE TABLE recv1 AS SELECT g FROM generate_series(1, 20000) g")
	done := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
	c.Exec(t, "postgres", "SELECT pg_switch_wal()")
	pgtest.Eventually(t, 3*time.Minute, "segment "+done+" in the repository", func() bool {
		ok, _ := recv.HasWAL(t.Context(), done)
		return ok
	})
	c.Exec(t, "postgres", "CREATE TABLE recv2 AS SELECT g FROM generate_series(1, 20000) g")
	unfinished := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
	pgtest.Eventually(t, time.Minute, "wal-receive to receive up to the current WAL", func() bool {
		return c.Query(t, "postgres", "SELECT coalesce(bool_and(write_lsn >= pg_current_wal_lsn()), false) FROM pg_stat_replication")[0][0] == "t"
	})
	stopRecv()
	spoolEmpty("wal-receive")
	got := filepath.Join(t.TempDir(), done)
	if r := runCLI(t, 3*time.Minute, env, "wal-fetch", "--prefetch", "0", "--repo", recvURL, done, got); r.code != 0 || fileSHA256(t, got, -1) != fileSHA256(t, local(done), -1) {
		t.Fatalf("the received %s differs from the server's (wal-fetch exit %d %s)", done, r.code, r.stderr)
	}
	partial := filepath.Join(t.TempDir(), unfinished+".partial")
	if r := runCLI(t, 3*time.Minute, env, "wal-fetch", "--prefetch", "0", "--repo", recvURL, unfinished+".partial", partial); r.code != 0 {
		t.Fatalf("wal-fetch %s.partial: exit %d %s", unfinished, r.code, r.stderr)
	}
	fi, err := os.Stat(partial)
	if err != nil || fi.Size() != segSize {
		t.Fatalf("the .partial: %v, %d bytes", err, fi.Size())
	}
	n := walEndOf(t, partial)
	if n == 0 || fileSHA256(t, partial, n) != fileSHA256(t, local(unfinished), n) {
		t.Fatalf("the .partial of %s does not hold the server's first %d bytes", unfinished, n)
	}
	t.Logf("%s.partial holds %d bytes of WAL", unfinished, n)
}
