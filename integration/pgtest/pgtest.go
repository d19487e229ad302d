// Package pgtest starts throw-away PostgreSQL clusters for integration tests.
//
// Start runs initdb and starts a server of a chosen major on a free port of
// 127.0.0.1, with a private Unix socket directory and replication enabled;
// StartDir starts an existing (for example restored) data directory. Both
// stop the server and remove its files when the test ends.
//
// The server binaries come from scripts/install-deps.sh: PostgreSQL 15 from
// Debian, 17 and 18 from npm into the repository's .cache/pg. A missing
// binary fails the test with the install hint; it never skips. Majors lists
// the majors to test (PGSTOW_TEST_MAJORS). When the tests run as root, the
// servers run as the postgres user (see TempDir).
//
// Environment variables:
//
//	PGSTOW_TEST_MAJORS   majors to test, e.g. "15,18" (default 15,17,18)
//	PGSTOW_PG<N>_BINDIR  server bindir of major N, instead of the defaults
//	PGSTOW_TEST_KEEP     if set, keep server directories for a post-mortem
package pgtest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Options configures a cluster made by Start.
type Options struct {
	// Major is the PostgreSQL major version: 15, 17 or 18.
	Major int
	// Conf holds extra postgresql.conf lines, appended after pgtest's own
	// settings (so they win over them).
	Conf []string
	// DataChecksums asks for data checksums. They are on by default, so
	// this field only documents intent; set NoDataChecksums to turn them off.
	DataChecksums bool
	// NoDataChecksums makes a cluster without data checksums.
	NoDataChecksums bool
	// InitdbArgs are extra initdb arguments, e.g. "--wal-segsize=256".
	InitdbArgs []string
}

// Cluster is a running (or stopped) throw-away server.
type Cluster struct {
	// Major is the PostgreSQL major version of the server.
	Major int
	// Port is the TCP port on 127.0.0.1.
	Port int
	// Dir holds the server's log and Unix socket (and, for Start, the data
	// directory). It belongs to the server user and is removed at cleanup.
	Dir string
	// DataDir is the data directory.
	DataDir string
	// SocketDir is the Unix socket directory.
	SocketDir string
	// BinDir holds initdb, pg_ctl and postgres of this major.
	BinDir string

	logFile     string
	waitSeconds int

	mu      sync.Mutex
	running bool // the server is up
	started bool // the server was up at some point: its log is worth showing
	loads   []*pgbenchLoad
}

const (
	startWaitSeconds    = 60
	startDirWaitSeconds = 120 // a restored directory may need to replay WAL first
	stopWaitSeconds     = 60
	portAttempts        = 3
)

// Start makes a new cluster with initdb and starts it. Data checksums are on
// unless opts.NoDataChecksums. The server listens on 127.0.0.1 only, allows
// trust authentication for user postgres including replication, has
// wal_level=replica, max_wal_senders and max_replication_slots 10, and
// fsync=off. It is stopped (immediate mode) and removed at cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Major == 0 {
		t.Fatalf("pgtest: Options.Major is required (one of Majors())")
	}
	if opts.DataChecksums && opts.NoDataChecksums {
		t.Fatalf("pgtest: Options.DataChecksums and NoDataChecksums are both set")
	}
	binDir, err := ServerBinaryPath(opts.Major)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	dir, err := newServerDir(fmt.Sprintf("pgtest%d-", opts.Major))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { removeDir(t, dir) })
	c := &Cluster{
		Major:       opts.Major,
		Dir:         dir,
		DataDir:     filepath.Join(dir, "data"),
		SocketDir:   dir,
		BinDir:      binDir,
		logFile:     filepath.Join(dir, "server.log"),
		waitSeconds: startWaitSeconds,
	}

	args := []string{"-D", c.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"}
	switch {
	case !opts.NoDataChecksums:
		args = append(args, "--data-checksums")
	case opts.Major >= 18:
		args = append(args, "--no-data-checksums") // on by default since 18
	}
	args = append(args, opts.InitdbArgs...)
	if out, err := c.run("initdb", args...); err != nil {
		t.Fatalf("pgtest: initdb (PostgreSQL %d): %v\n%s", c.Major, err, out)
	}

	c.Port = freePort(t)
	conf := []string{
		"",
		"# pgtest",
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(c.Port),
		"unix_socket_directories = '" + c.SocketDir + "'",
		"max_wal_senders = 10",
		"max_replication_slots = 10",
		"wal_level = replica",
		"fsync = off # tests only",
	}
	conf = append(conf, opts.Conf...)
	if err := appendConf(c.DataDir, conf...); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { c.cleanup(t) })
	c.startOnFreePort(t, true)
	return c
}

// StartDir starts an existing data directory of the given major, such as a
// restored backup, on a fresh port and socket directory (overriding the
// port, unix_socket_directories and listen_addresses that its
// postgresql.conf may carry from the source). When we are root the directory
// is chowned to the postgres user first, and temporary directories above it
// are made traversable. StartDir waits up to 120 s for the server to accept
// connections, so recovery can finish. It stops the server at cleanup but
// leaves the data directory to its owner.
func StartDir(t testing.TB, major int, dataDir string) *Cluster {
	t.Helper()
	binDir, err := ServerBinaryPath(major)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	v, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if err != nil {
		t.Fatalf("pgtest: %s is no data directory: %v", dataDir, err)
	}
	if got := strings.TrimSpace(string(v)); got != strconv.Itoa(major) {
		t.Fatalf("pgtest: %s holds a PostgreSQL %s data directory, not %d", dataDir, got, major)
	}
	if err := handOverDataDir(dataDir); err != nil {
		t.Fatalf("pgtest: prepare data directory %s: %v", dataDir, err)
	}
	dir, err := newServerDir(fmt.Sprintf("pgtest%d-", major))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { removeDir(t, dir) })
	c := &Cluster{
		Major:       major,
		Dir:         dir,
		DataDir:     dataDir,
		SocketDir:   dir,
		BinDir:      binDir,
		logFile:     filepath.Join(dir, "server.log"),
		waitSeconds: startDirWaitSeconds,
	}
	t.Cleanup(func() { c.cleanup(t) })
	c.startOnFreePort(t, false)
	return c
}

// Stop stops the server (fast mode: a clean shutdown), first stopping any
// pgbench load started with StartPgbenchLoad.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	c.stopLoads(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		t.Fatalf("pgtest: Stop: the PostgreSQL %d server in %s is not running", c.Major, c.DataDir)
	}
	if out, err := c.run("pg_ctl", "-D", c.DataDir, "-m", "fast", "-w", "-t", strconv.Itoa(stopWaitSeconds), "stop"); err != nil {
		t.Fatalf("pgtest: pg_ctl stop: %v\n%s\nserver log %s:\n%s", err, out, c.logFile, c.logTail())
	}
	c.running = false
}

// Restart stops the server (fast mode) and starts it again on the same
// port. Any pgbench load is stopped first, as the restart would break it.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.Stop(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.start(); err != nil {
		t.Fatalf("pgtest: restart PostgreSQL %d: %v", c.Major, err)
	}
}

// startOnFreePort starts the server, retrying on another port when the one
// picked was taken meanwhile (ports are picked by binding and closing).
func (c *Cluster) startOnFreePort(t testing.TB, ownConf bool) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 1; ; attempt++ {
		if c.Port == 0 {
			c.Port = freePort(t)
		}
		err := c.start()
		if err == nil {
			return
		}
		if attempt == portAttempts || !strings.Contains(err.Error(), "could not bind") &&
			!strings.Contains(err.Error(), "ddress already in use") {
			t.Fatalf("pgtest: start PostgreSQL %d: %v", c.Major, err)
		}
		t.Logf("pgtest: port %d was taken, trying another one", c.Port)
		c.Port = freePort(t)
		if ownConf {
			if err := appendConf(c.DataDir, "port = "+strconv.Itoa(c.Port)); err != nil {
				t.Fatalf("pgtest: %v", err)
			}
		}
	}
}

// start runs pg_ctl start with the port and socket directory given on the
// command line, so they hold whatever postgresql.conf says. c.mu is held.
func (c *Cluster) start() error {
	logOffset := int64(0)
	if fi, err := os.Stat(c.logFile); err == nil {
		logOffset = fi.Size()
	}
	opts := fmt.Sprintf("-p %d -k '%s' -c listen_addresses=127.0.0.1", c.Port, c.SocketDir)
	out, err := c.run("pg_ctl", "-D", c.DataDir, "-l", c.logFile, "-o", opts,
		"-w", "-t", strconv.Itoa(c.waitSeconds), "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start: %w\n%s\nserver log %s:\n%s", err, out, c.logFile, c.logSince(logOffset))
	}
	c.running = true
	c.started = true
	return nil
}

// cleanup stops pgbench loads and the server (immediate mode: nothing of
// the cluster is kept), and shows the server log if the test failed.
func (c *Cluster) cleanup(t testing.TB) {
	c.stopLoads(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Failed() && c.started {
		t.Logf("pgtest: PostgreSQL %d server log %s (tail):\n%s", c.Major, c.logFile, c.logTail())
	}
	if !c.running {
		return
	}
	if out, err := c.run("pg_ctl", "-D", c.DataDir, "-m", "immediate", "-w", "-t", strconv.Itoa(stopWaitSeconds), "stop"); err != nil {
		t.Errorf("pgtest: cleanup: pg_ctl stop: %v\n%s", err, out)
		return
	}
	c.running = false
}

// run runs a program of BinDir as the server user and returns its output.
func (c *Cluster) run(name string, args ...string) (string, error) {
	cmd, err := serverCommand(filepath.Join(c.BinDir, name), args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const logTailLines = 40

func (c *Cluster) logTail() string {
	return c.logSince(0)
}

// logSince returns the last lines of the server log written after offset.
func (c *Cluster) logSince(offset int64) string {
	b, err := os.ReadFile(c.logFile)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	if offset <= int64(len(b)) {
		b = b[offset:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = slices.Concat([]string{"…"}, lines[len(lines)-logTailLines:])
	}
	return strings.Join(lines, "\n")
}

func appendConf(dataDir string, lines ...string) error {
	path := filepath.Join(dataDir, "postgresql.conf")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("append to postgresql.conf: %w", err)
	}
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to postgresql.conf: %w", err)
	}
	return nil
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: pick a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
