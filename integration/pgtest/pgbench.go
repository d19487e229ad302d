package pgtest

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// pgbenchCommand prepares pgbench against the cluster over TCP as user
// postgres; args follow the connection options (a database name last).
func (c *Cluster) pgbenchCommand(args ...string) *exec.Cmd {
	conn := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres"}
	cmd := exec.Command(c.Bin("pgbench"), append(conn, args...)...)
	cmd.Env = cleanEnv()
	return cmd
}

// Pgbench runs pgbench (Debian's PostgreSQL 15 build for the npm majors,
// which lack it) with args, for example "-i", "-s", "1", "postgres". It
// fails the test with pgbench's output if pgbench fails.
func (c *Cluster) Pgbench(t testing.TB, args ...string) {
	t.Helper()
	cmd := c.pgbenchCommand(args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: %s: %v\n%s", cmd, err, out)
	}
}

// pgbenchLoad is a pgbench run in the background.
type pgbenchLoad struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{} // closed when pgbench has exited
	err  error         // of cmd.Wait; read after done
	once sync.Once
}

// StartPgbenchLoad writes to database db in the background with the TPC-B
// like pgbench transaction from the given number of clients, for up to ten
// minutes, to have changes happening during a backup. It initialises the
// pgbench tables (scale 1) if db lacks them. The returned function stops the
// load (kill and wait); it fails the test if pgbench gave up before that,
// since a test that meant to write under load would otherwise pass without
// it. Stop, Restart and cleanup stop the load too. Stopping twice is fine.
func (c *Cluster) StartPgbenchLoad(t testing.TB, db string, clients int) (stop func()) {
	t.Helper()
	if clients < 1 {
		clients = 1
	}
	if rows := c.Query(t, db, "SELECT to_regclass('pgbench_accounts') IS NOT NULL"); rows[0][0] != "t" {
		c.Pgbench(t, "-i", "-s", "1", "-q", db)
	}
	l := &pgbenchLoad{
		cmd:  c.pgbenchCommand("-n", "-T", "600", "-c", strconv.Itoa(clients), db),
		done: make(chan struct{}),
	}
	// Its own application_name, so that stop can tell its backends apart.
	appName := fmt.Sprintf("pgtest-load-%p", l)
	l.cmd.Env = append(l.cmd.Env, "PGAPPNAME="+appName)
	l.cmd.Stdout = &l.out
	l.cmd.Stderr = &l.out
	if err := l.cmd.Start(); err != nil {
		t.Fatalf("pgtest: %s: %v", l.cmd, err)
	}
	go func() {
		l.err = l.cmd.Wait()
		close(l.done)
	}()
	c.mu.Lock()
	c.loads = append(c.loads, l)
	c.mu.Unlock()
	return func() {
		if !l.stop(t) {
			return // stopped already, by Stop, Restart or cleanup
		}
		// pgbench is gone, but a backend of its may still be finishing
		// the transaction it was in, its commit included: what the test
		// reads next must not change after it, so wait for them to exit.
		Eventually(t, 30*time.Second, "the backends of the stopped pgbench load to exit", func() bool {
			return c.Query(t, db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"+appName+"'")[0][0] == "0"
		})
	}
}

// stop kills pgbench and waits for it, once; it reports whether this
// call did so.
func (l *pgbenchLoad) stop(t testing.TB) bool {
	now := false
	l.once.Do(func() {
		now = true
		select {
		case <-l.done:
			t.Errorf("pgtest: background %s ended before it was stopped: %v\n%s", l.cmd, l.err, l.out.String())
		default:
			_ = l.cmd.Process.Kill()
			<-l.done
		}
	})
	return now
}

// stopLoads stops every pgbench load of the cluster.
func (c *Cluster) stopLoads(t testing.TB) {
	c.mu.Lock()
	loads := c.loads
	c.loads = nil
	c.mu.Unlock()
	for _, l := range loads {
		l.stop(t)
	}
}
