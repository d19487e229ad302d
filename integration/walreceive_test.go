package integration

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/manifest"
)

// startReceiver runs pgstow wal-receive in the background.
func startReceiver(t *testing.T, repoURL, dsn string, extra ...string) (stop func()) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(pgstowBin, append([]string{"wal-receive", "--repo", repoURL, "--pg", dsn, "--slot", "pgstow_test"}, extra...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("wal-receive exited with %v:\n%s", err, out.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done // out is written until Wait returns
			t.Errorf("wal-receive did not stop within 30 s of SIGTERM:\n%s", out.String())
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestWALReceive: streaming WAL while pgbench runs, with the receiver and
// the server restarted in the middle, loses nothing committed before the
// stop: a restore to the end of the archive has it all.
func TestWALReceive(t *testing.T) {
	t.Parallel()
	for _, major := range pgtest.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			c := pgtest.Start(t, pgtest.Options{Major: major})
			c.Pgbench(t, "-i", "-s", "2", "postgres")
			repoDir := filepath.Join(pgtest.TempDir(t), "repo")
			repoURL := "file://" + repoDir
			repo := openFileRepo(t, repoDir)
			b, err := backup.Run(t.Context(), repo, backupOpts(t, c))
			if err != nil {
				t.Fatal(err)
			}
			waitSegment := func(name string) {
				pgtest.Eventually(t, time.Minute, "segment "+name+" in the repository", func() bool {
					ok, _ := repo.HasWAL(t.Context(), name)
					return ok
				})
			}
			// writesWAL waits until the load has written n bytes of WAL.
			writesWAL := func(n int) {
				from := c.Query(t, "postgres", "SELECT pg_current_wal_lsn()")[0][0]
				pgtest.Eventually(t, time.Minute, "pgbench to write WAL", func() bool {
					return c.Query(t, "postgres", fmt.Sprintf("SELECT pg_current_wal_lsn() - '%s'::pg_lsn >= %d", from, n))[0][0] == "t"
				})
			}
			switchAndWait := func() string {
				name := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
				waitSegment(name)
				return name
			}

			stopRecv := startReceiver(t, repoURL, c.DSN("postgres"), "--create-slot")
			stopLoad := c.StartPgbenchLoad(t, "postgres", 2)
			writesWAL(20 << 20)
			first := switchAndWait()
			stopRecv() // a clean stop stores the unfinished segment as .partial
			partials, _ := filepath.Glob(filepath.Join(repoDir, "wal", "*", "*.partial.lz4"))
			t.Logf("after the first stop: %d partial segment(s)", len(partials))

			stopLoad()
			c.Restart(t)
			stopLoad = c.StartPgbenchLoad(t, "postgres", 2)
			stopRecv = startReceiver(t, repoURL, c.DSN("postgres")) // resumes from the slot
			writesWAL(20 << 20)
			stopLoad()
			want := c.Query(t, "postgres", "SELECT count(*) || ':' || sum(delta) FROM pgbench_history")[0][0]
			last := switchAndWait()
			stopRecv()
			t.Logf("streamed up to %s (first switch %s); pgbench_history %s", last, first, want)

			// Every segment from the backup's first to the last is there.
			_, from, _ := manifest.ParseSegmentName(b.WAL[0].Name, 16<<20)
			_, to, _ := manifest.ParseSegmentName(last, 16<<20)
			for no := from; no <= to; no++ {
				name := manifest.SegmentName(1, no, 16<<20)
				if ok, _ := repo.HasWAL(t.Context(), name); !ok {
					t.Fatalf("segment %s is missing: the stream has a gap", name)
				}
			}
			// No slot position was lost: the slot still exists for the next run.
			if n := c.Query(t, "postgres", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgstow_test'")[0][0]; n != "1" {
				t.Fatalf("slot count %s", n)
			}

			handToServerUser(t, filepath.Dir(pgstowBin))
			chownServerUser(t, repoDir)
			target := filepath.Join(pgtest.TempDir(t), "data")
			r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "-D", target, "--wal", "fetch")
			if r.code != 0 {
				t.Fatalf("restore: %s", r.stderr)
			}
			rs := restoreChecks(t, major, target, "-n")
			if got := rs.Query(t, "postgres", "SELECT count(*) || ':' || sum(delta) FROM pgbench_history")[0][0]; got != want {
				t.Fatalf("pgbench_history %s after restore, %s before the stop", got, want)
			}
		})
	}
}

// partialSetup runs wal-receive with its metrics endpoint on slot, writes
// rows of WAL into a fresh segment, and waits until wal-receive has
// received all of it. It returns the running command, its output, the
// segment and the end of the WAL written.
func partialSetup(t *testing.T, c *pgtest.Cluster, repoURL, slot string, rows int) (*exec.Cmd, *testserver.LockedBuffer, string, manifest.LSN) {
	t.Helper()
	addr := testserver.Addr(freePort(t))
	out := &testserver.LockedBuffer{}
	cmd := exec.Command(pgstowRaceBin, "wal-receive", "--repo", repoURL, "--pg", c.DSN("postgres"), "--slot", slot,
		"--create-slot", "--metrics-listen", addr)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// Some WAL in a new segment, well short of its end.
	c.Exec(t, "postgres", "SELECT pg_switch_wal()")
	c.Exec(t, "postgres", fmt.Sprintf("CREATE TABLE partial_test AS SELECT g FROM generate_series(1, %d) g", rows))
	lsn := c.Query(t, "postgres", "SELECT pg_current_wal_insert_lsn()")[0][0]
	segName := c.Query(t, "postgres", "SELECT pg_walfile_name('"+lsn+"')")[0][0]
	target, err := manifest.ParseLSN(lsn)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	pgtest.Eventually(t, time.Minute, "wal-receive to receive up to "+lsn, func() bool {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		fams, err := decodeMetrics(resp.Body, expfmt.ResponseFormat(resp.Header))
		if err != nil {
			return false
		}
		v, ok := seriesValue(fams, "pgstow_wal_receive_received_lsn_bytes", map[string]string{"slot": slot})
		return ok && v >= float64(target)
	})
	return cmd, out, segName, target
}

// TestWALReceiveKeepsPartialWhenServerGoes: when the server goes away
// under wal-receive, the WAL it had received of the unfinished segment is
// stored as <segment>.partial, byte for byte what the server wrote, and
// wal-fetch brings it back as the runbook says.
func TestWALReceiveKeepsPartialWhenServerGoes(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: pgtest.Majors()[0]})
	repoDir := t.TempDir()
	repoURL := "file://" + repoDir
	cmd, out, segName, target := partialSetup(t, c, repoURL, "pgstow_partial", 20000)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	c.Stop(t)
	select {
	case err := <-exited:
		if err == nil {
			t.Fatalf("wal-receive exited 0 when the server went away:\n%s", out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("wal-receive did not exit within 2 minutes of the server stopping:\n%s", out.String())
	}
	t.Logf("wal-receive: %s", out.String())

	got := filepath.Join(t.TempDir(), segName)
	if r := runCLI(t, time.Minute, nil, "wal-fetch", "--prefetch", "0", "--repo", repoURL, segName+".partial", got); r.code != 0 {
		t.Fatalf("wal-fetch %s.partial: exit %d %s\n%s", segName, r.code, r.stderr, out.String())
	}
	partial, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	server, err := os.ReadFile(filepath.Join(c.DataDir, "pg_wal", segName))
	if err != nil {
		t.Fatal(err)
	}
	n := int(uint64(target) % (16 << 20))
	if len(partial) != 16<<20 || !bytes.Equal(partial[:n], server[:n]) {
		t.Fatalf("the .partial of %s (%d bytes) does not hold the %d bytes the server wrote before %s", segName, len(partial), n, target)
	}
}

// cutProxy forwards to upstream and closes the connection after limit
// bytes from the server.
func cutProxy(t *testing.T, upstream string, limit int64) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			go io.Copy(s, c)
			go func() {
				io.CopyN(c, s, limit)
				c.Close()
				s.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// partialBytes is how much WAL a stored .partial holds (before its zero
// padding).
func partialBytes(t *testing.T, repoURL, segName string) int {
	got := filepath.Join(t.TempDir(), segName)
	if r := runCLI(t, time.Minute, nil, "wal-fetch", "--prefetch", "0", "--repo", repoURL, segName+".partial", got); r.code != 0 {
		t.Fatalf("wal-fetch: %d %s", r.code, r.stderr)
	}
	b, _ := os.ReadFile(got)
	return len(bytes.TrimRight(b, "\x00"))
}

// TestWALReceiveNeverShrinksPartial: a restarted wal-receive whose
// connection drops before it caught up with an earlier run's .partial
// keeps the longer one.
func TestWALReceiveNeverShrinksPartial(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: pgtest.Majors()[0]})
	repoDir := t.TempDir()
	repoURL := "file://" + repoDir
	cmd, out, segName, target := partialSetup(t, c, repoURL, "rv", 100000)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("wal-receive after SIGTERM: %v\n%s", err, out.String())
	}
	before := partialBytes(t, repoURL, segName)
	// Zero bytes at the end of the WAL are indistinguishable from the
	// padding: allow for a page of them.
	if received := int(uint64(target) % (16 << 20)); before < received-8192 {
		t.Fatalf("the clean stop stored %d bytes of %s, less than the %d received", before, segName, received)
	}
	t.Logf("after a clean stop: %s.partial holds %d bytes (target %d in segment)", segName, before, uint64(target)%(16<<20))

	// A restart whose connection drops during the catch-up of the segment.
	proxy := cutProxy(t, fmt.Sprintf("127.0.0.1:%d", c.Port), 300<<10)
	host, port, _ := net.SplitHostPort(proxy)
	r := runCLI(t, time.Minute, nil, "wal-receive", "--repo", repoURL, "--pg",
		fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable", host, port), "--slot", "rv")
	t.Logf("second wal-receive: exit %d %s", r.code, r.stderr)
	after := partialBytes(t, repoURL, segName)
	t.Logf("after the dropped restart: %s.partial holds %d bytes", segName, after)
	if r.code == 0 {
		t.Errorf("the second wal-receive exited 0 though its connection was cut")
	}
	if after < before {
		t.Errorf("the .partial shrank from %d to %d bytes", before, after)
	}
}
