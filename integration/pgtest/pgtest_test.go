package pgtest

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCluster(t *testing.T) {
	for _, major := range Majors() {
		t.Run("pg"+strconv.Itoa(major), func(t *testing.T) {
			t.Parallel()
			testCluster(t, major)
		})
	}
}

func testCluster(t *testing.T, major int) {
	var c *Cluster
	t.Run("lifecycle", func(t *testing.T) {
		c = Start(t, Options{Major: major, Conf: []string{"application_name = 'pgtest'"}})

		rows := c.Query(t, "postgres", "SELECT version(), current_setting('server_version_num'), "+
			"current_setting('data_checksums'), current_setting('wal_level'), current_setting('application_name')")
		want := "PostgreSQL " + strconv.Itoa(major) + "."
		if got := rows[0][0]; !strings.HasPrefix(got, want) {
			t.Errorf("version() = %q, want prefix %q", got, want)
		}
		if got, _ := strconv.Atoi(rows[0][1]); got/10000 != major {
			t.Errorf("server_version_num = %q, want major %d", rows[0][1], major)
		}
		if rows[0][2] != "on" || rows[0][3] != "replica" || rows[0][4] != "pgtest" {
			t.Errorf("data_checksums, wal_level, application_name = %q, want on, replica, pgtest (from Options.Conf)", rows[0][2:])
		}

		// The DSN, URL and socket all reach the server; replication is allowed.
		for _, dsn := range []string{c.DSN("postgres"), c.URL("postgres"), "host=" + c.SocketDir + " port=" + strconv.Itoa(c.Port) + " user=postgres dbname=postgres"} {
			if _, err := execDSN(dsn, "SELECT 1"); err != nil {
				t.Errorf("connect %s: %v", dsn, err)
			}
		}
		if _, err := execDSN(c.DSN("postgres")+" replication=true", "IDENTIFY_SYSTEM"); err != nil {
			t.Errorf("IDENTIFY_SYSTEM over a replication connection: %v", err)
		}

		c.Pgbench(t, "-i", "-s", "1", "-q", "postgres")
		c.Exec(t, "postgres", "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('kept')")

		stop := c.StartPgbenchLoad(t, "postgres", 2)
		Eventually(t, 30*time.Second, "pgbench to commit", func() bool {
			return c.Query(t, "postgres", "SELECT count(*) > 0 FROM pgbench_history")[0][0] == "t"
		})
		stop()
		stop()

		c.Restart(t)
		if got := c.Query(t, "postgres", "SELECT v FROM marker"); len(got) != 1 || got[0][0] != "kept" {
			t.Errorf("after restart, marker = %q", got)
		}

		// A stopped data directory starts again with StartDir on a fresh
		// port and socket directory, whatever postgresql.conf says.
		c.Stop(t)
		d := StartDir(t, major, c.DataDir)
		if d.Port == c.Port || d.SocketDir == c.SocketDir {
			t.Errorf("StartDir reused port %d or socket directory %s", d.Port, d.SocketDir)
		}
		if got := d.Query(t, "postgres", "SELECT v FROM marker"); len(got) != 1 || got[0][0] != "kept" {
			t.Errorf("after StartDir, marker = %q", got)
		}
		d.StartPgbenchLoad(t, "postgres", 1) // stopped by cleanup
		c.Port = d.Port
	})
	if c == nil {
		return
	}
	if !Poll(10*time.Second, func() bool { return portClosed(c.Port) }) {
		t.Errorf("server still listens on port %d after cleanup", c.Port)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, fs.ErrNotExist) && !keepDirs() {
		t.Errorf("cluster directory %s not removed at cleanup: %v", c.Dir, err)
	}
}

func TestNoDataChecksums(t *testing.T) {
	majors := Majors()
	major := majors[len(majors)-1]
	c := Start(t, Options{Major: major, NoDataChecksums: true})
	if got := c.Query(t, "postgres", "SHOW data_checksums")[0][0]; got != "off" {
		t.Errorf("PostgreSQL %d: data_checksums = %q, want off", major, got)
	}
}

func TestMajors(t *testing.T) {
	t.Setenv("PGSTOW_TEST_MAJORS", " 18, 15 ")
	if got := Majors(); len(got) != 2 || got[0] != 18 || got[1] != 15 {
		t.Errorf("Majors() = %v, want [18 15]", got)
	}
	t.Setenv("PGSTOW_TEST_MAJORS", "")
	if got := Majors(); len(got) != 3 {
		t.Errorf("Majors() = %v, want the three defaults", got)
	}
	t.Setenv("PGSTOW_TEST_MAJORS", "17,x")
	defer func() {
		if recover() == nil {
			t.Errorf("Majors() accepted a malformed list")
		}
	}()
	Majors()
}

func TestServerBinaryPathMissing(t *testing.T) {
	_, err := ServerBinaryPath(9)
	if err == nil || !strings.Contains(err.Error(), "scripts/install-deps.sh") {
		t.Errorf("ServerBinaryPath(9) = %v, want an error with the install hint", err)
	}
}

// portClosed reports whether nothing listens on port any more.
func portClosed(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return true
	}
	conn.Close()
	return false
}
