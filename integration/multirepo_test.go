package integration

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/manifest"
)

// gate forwards TCP connections on a fixed loopback port to upstream, and
// can be shut (the port closed: connection refused, as for a store that
// is down) and opened again on the same port.
type gate struct {
	port     int
	upstream string
	mu       sync.Mutex
	ln       net.Listener
	conns    []net.Conn
}

func startGate(t *testing.T, upstream string) *gate {
	t.Helper()
	g := &gate{port: freePort(t), upstream: upstream}
	g.open(t)
	t.Cleanup(g.shut)
	return g
}

func (g *gate) open(t *testing.T) {
	t.Helper()
	var ln net.Listener
	var err error
	// The port was ours a moment ago; a lingering socket may hold it for
	// a moment.
	for range 50 {
		if ln, err = net.Listen("tcp", testserver.Addr(g.port)); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("gate: %v", err)
	}
	g.mu.Lock()
	g.ln = ln
	g.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", g.upstream)
			if err != nil {
				c.Close()
				continue
			}
			g.mu.Lock()
			g.conns = append(g.conns, c, u)
			g.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
}

// shut closes the port and every connection through it.
func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		g.ln.Close()
		g.ln = nil
	}
	for _, c := range g.conns {
		c.Close()
	}
	g.conns = nil
}

// TestWALToTwoRepositories: archive_command pushes every WAL file to a
// file:// repository and a MinIO one. While MinIO is unreachable, wal-push
// fails with one line naming that repository (the file:// one still gets
// the file), PostgreSQL's archiver keeps retrying, and once MinIO is back
// the archive catches up in both; a point-in-time restore from either
// repository gets exactly the rows committed before the target.
// wal-receive to two repositories refuses to start with one unreachable,
// stops naming a repository that fails mid-stream without confirming the
// segment it lacks, and resumes from the slot once it is repaired.
//
// Not parallel: the servers started here (and the restored ones, whose
// restore_command runs wal-fetch) take the S3 credentials from the
// environment.
func TestWALToTwoRepositories(t *testing.T) {
	minio := testserver.StartMinIO(t)
	bucket := minio.NewBucket(t)
	s3Env := []string{"AWS_ACCESS_KEY_ID=" + minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + minio.SecretKey, "AWS_REGION=us-east-1"}
	for _, kv := range s3Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	g := startGate(t, strings.TrimPrefix(minio.Endpoint, "http://"))
	s3URL := func(prefix string) string {
		return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&path_style=true", bucket, prefix, testserver.Addr(g.port))
	}
	s3Name := func(prefix string) string { return "repository s3://" + bucket + "/" + prefix }
	// hasWAL asks the CLI whether repository url holds WAL file name.
	hasWAL := func(url, name string) bool {
		r := runCLI(t, time.Minute, s3Env, "wal-fetch", "--repo", url, name, filepath.Join(t.TempDir(), name))
		if r.code > 1 {
			t.Logf("wal-fetch %s from %s: exit %d %s", name, url, r.code, r.stderr)
		}
		return r.code == 0
	}

	fileDir := filepath.Join(pgtest.TempDir(t), "repo")
	fileURL, objURL := "file://"+fileDir, s3URL("pg")
	handToServerUser(t, filepath.Dir(pgstowBin))
	c := pgtest.Start(t, pgtest.Options{Major: 15, Conf: []string{
		"archive_mode = on",
		fmt.Sprintf(`archive_command = '%s wal-push --repo %s --repo "%s" --log-level warn %%p'`, pgstowBin, fileURL, objURL),
	}})
	// switchWAL writes a little WAL first: a switch with nothing new
	// since the last one completes no segment.
	switchWAL := func() string {
		c.Exec(t, "postgres", "INSERT INTO filler VALUES (1)")
		return c.Query(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
	}
	archived := func(seg string) bool {
		return c.Query(t, "postgres", "SELECT coalesce(last_archived_wal, '') >= '"+seg+"' FROM pg_stat_archiver")[0][0] == "t"
	}
	batch := func(n int) {
		c.Exec(t, "postgres", fmt.Sprintf("INSERT INTO pitr SELECT g, %d FROM generate_series(1, 100) g", n))
	}
	c.Exec(t, "postgres", "CREATE TABLE pitr (id int, batch int)")
	c.Exec(t, "postgres", "CREATE TABLE filler (x int)")
	batch(1)
	// The first archived file creates and binds both repositories as the
	// server's user.
	first := switchWAL()
	pgtest.Eventually(t, time.Minute, "the archiver to reach "+first, func() bool { return archived(first) })

	cliBackup(t, c, fileURL)
	if r := runCLI(t, 5*time.Minute, s3Env, "backup", "--repo", objURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast"); r.code != 0 {
		t.Fatalf("backup into %s: exit %d %s", objURL, r.code, r.stderr)
	}
	chownServerUser(t, fileDir) // wal-push and wal-fetch run as the server user
	batch(2)
	targetTime := c.Query(t, "postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0]
	batch(3)

	t.Run("archive_command with one repository down", func(t *testing.T) {
		pre := switchWAL() // all archived before the store goes down
		pgtest.Eventually(t, time.Minute, "the archiver to reach "+pre, func() bool { return archived(pre) })
		g.shut()
		failedBefore := c.Query(t, "postgres", "SELECT failed_count FROM pg_stat_archiver")[0][0]
		seg := switchWAL()
		seen := ""
		pgtest.Eventually(t, time.Minute, "archive_command to fail on "+seg+" twice", func() bool {
			r := c.Query(t, "postgres", "SELECT coalesce(last_failed_wal, ''), failed_count - "+failedBefore+" >= 2, coalesce(last_archived_wal, '') FROM pg_stat_archiver")[0]
			if st := strings.Join(r, " "); st != seen {
				t.Logf("archiver: last failed, failed twice, last archived: %s", st)
				seen = st
			}
			return r[0] == seg && r[1] == "t"
		})
		if archived(seg) {
			t.Fatalf("%s counted as archived while %s was unreachable", seg, objURL)
		}
		// The server's log has the reason, naming the repository.
		log, err := os.ReadFile(filepath.Join(c.Dir, "server.log"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(log, []byte(s3Name("pg"))) {
			t.Errorf("the server's log does not name %s:\n%s", s3Name("pg"), log)
		}
		// wal-push itself: exit 1, one line, naming the failing repository
		// and not the healthy one, which already holds the file.
		r := runCLI(t, time.Minute, s3Env, "wal-push", "--repo", fileURL, "--repo", objURL, "--ahead", "0", filepath.Join(c.DataDir, "pg_wal", seg))
		msg := strings.TrimSpace(r.stderr)
		if r.code != 1 || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, s3Name("pg")) || strings.Contains(msg, fileURL) {
			t.Errorf("wal-push with %s down: exit %d, stderr %q", objURL, r.code, r.stderr)
		}
		t.Logf("wal-push: %s", msg)
		if !hasWAL(fileURL, seg) {
			t.Errorf("the healthy repository lacks %s", seg)
		}
		// Back up: PostgreSQL's retry succeeds and the archive catches up.
		g.open(t)
		last := switchWAL()
		pgtest.Eventually(t, 2*time.Minute, "the archiver to reach "+last, func() bool { return archived(last) })
		for _, url := range []string{fileURL, objURL} {
			r := runCLI(t, time.Minute, s3Env, "verify", "--wal", "--repo", url)
			if r.code != 0 || !strings.Contains(r.stdout, "0 missing") {
				t.Errorf("verify --wal --repo %s: exit %d %s %s", url, r.code, r.stdout, r.stderr)
			}
		}
	})

	t.Run("point-in-time restore from either repository", func(t *testing.T) {
		for _, url := range []string{fileURL, objURL} {
			target := filepath.Join(pgtest.TempDir(t), "data")
			r := runCLI(t, 3*time.Minute, s3Env, "restore", "--repo", url, "-D", target, "--target-time", targetTime)
			if r.code != 0 {
				t.Fatalf("restore --repo %s --target-time %s: exit %d %s", url, targetTime, r.code, r.stderr)
			}
			f, err := os.OpenFile(filepath.Join(target, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("archive_mode = off\n")
			f.Close()
			rs := restoreChecks(t, 15, target, "-n")
			if got := rs.Query(t, "postgres", "SELECT max(batch) || ':' || count(*) FROM pitr")[0][0]; got != "2:200" {
				t.Errorf("restored from %s: rows %s (max batch:count), want 2:200", url, got)
			}
			rs.Stop(t)
		}
	})

	t.Run("wal-receive", func(t *testing.T) {
		recvDir := filepath.Join(t.TempDir(), "repo")
		recvURL, recvObj := "file://"+recvDir, s3URL("stream")
		args := []string{"wal-receive", "--repo", recvURL, "--repo", recvObj, "--pg", c.DSN("postgres"), "--slot", "multi", "--create-slot"}

		// One repository unreachable: it does not start, and says which.
		g.shut()
		r := runCLI(t, time.Minute, s3Env, args...)
		if r.code != 1 || !strings.Contains(r.stderr, s3Name("stream")) {
			t.Fatalf("wal-receive with %s down: exit %d %s", recvObj, r.code, r.stderr)
		}
		g.open(t)

		// run starts wal-receive; wait collects its exit.
		run := func() (wait func(time.Duration) (int, string), stop func()) {
			var out bytes.Buffer
			cmd := exec.Command(pgstowBin, args...)
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			t.Cleanup(func() { cmd.Process.Kill(); <-done })
			wait = func(d time.Duration) (int, string) {
				select {
				case <-done:
					return cmd.ProcessState.ExitCode(), out.String()
				case <-time.After(d):
					cmd.Process.Kill()
					<-done
					t.Fatalf("wal-receive did not exit within %s:\n%s", d, out.String())
					return 0, ""
				}
			}
			return wait, func() { cmd.Process.Signal(syscall.SIGTERM) }
		}
		waitIn := func(url, seg string) {
			pgtest.Eventually(t, time.Minute, seg+" in "+url, func() bool { return hasWAL(url, seg) })
		}
		wait, _ := run()
		seg := switchWAL()
		waitIn(recvURL, seg)
		waitIn(recvObj, seg)

		// The file:// repository breaks mid-stream: its timeline directory
		// becomes a file, so the next segment cannot be stored there.
		tliDir := filepath.Join(recvDir, "wal", seg[:8])
		if err := os.Rename(tliDir, tliDir+".moved"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tliDir, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		lost := switchWAL()
		code, out := wait(2 * time.Minute)
		if code != 1 || !strings.Contains(out, "repository "+recvURL) {
			t.Fatalf("wal-receive with %s broken: exit %d\n%s", recvURL, code, out)
		}
		// Nothing the broken repository lacks was confirmed to the server.
		_, segNo, err := manifest.ParseSegmentName(lost, 16<<20)
		if err != nil {
			t.Fatal(err)
		}
		lostStart := manifest.LSN(segNo * (16 << 20))
		if ok := c.Query(t, "postgres", fmt.Sprintf("SELECT restart_lsn <= '%s' FROM pg_replication_slots WHERE slot_name = 'multi'", lostStart))[0][0]; ok != "t" {
			t.Errorf("the slot moved past %s (%s), which %s lacks", lostStart, lost, recvURL)
		}

		// Repaired, it resumes from the slot and both repositories hold
		// every segment.
		os.Remove(tliDir)
		if err := os.Rename(tliDir+".moved", tliDir); err != nil {
			t.Fatal(err)
		}
		wait, stop := run()
		next := switchWAL()
		for _, s := range []string{lost, next} {
			waitIn(recvURL, s)
			waitIn(recvObj, s)
		}
		stop()
		if code, out := wait(time.Minute); code != 0 {
			t.Errorf("wal-receive after SIGTERM: exit %d\n%s", code, out)
		}
		c.Exec(t, "postgres", "SELECT pg_drop_replication_slot('multi')")
	})
}
