package pgtest

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// PostgreSQL's initdb, pg_ctl and postgres refuse to run as root. When the
// tests run as root (CI does), those programs run as the "postgres" user,
// which must own the data directory and be able to traverse every directory
// above it and above the binaries. Directories we create for servers are
// therefore made under /var/tmp (1777; os.TempDir may point under /root,
// which is 0700), chmod 0755 and chowned to postgres.

// serverUser is the uid and gid the server programs run as, or nil when we
// are not root and run them as ourselves.
type serverUser struct {
	uid, gid uint32
}

var lookupServerUser = sync.OnceValues(func() (*serverUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, so the servers must run as the postgres user: %w "+
			"(apt-get install postgresql-common creates it)", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid of postgres %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid of postgres %q: %w", u.Gid, err)
	}
	return &serverUser{uid: uint32(uid), gid: uint32(gid)}, nil
})

// serverCommand prepares a server program (initdb, pg_ctl, postgres) to run
// as the server user, with the libpq environment variables of the test
// process removed so that they cannot redirect it.
func serverCommand(name string, args ...string) (*exec.Cmd, error) {
	su, err := lookupServerUser()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = cleanEnv()
	if su != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: su.uid, Gid: su.gid, Groups: []uint32{}},
		}
		// The test's working directory may not be readable by postgres.
		cmd.Dir = "/"
	}
	return cmd, nil
}

// cleanEnv is the environment without PG* variables (PGDATA, PGPORT, PGHOST…).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// keepDirs reports whether PGSTOW_TEST_KEEP asks to keep server directories
// after the test, for a post-mortem.
func keepDirs() bool {
	return os.Getenv("PGSTOW_TEST_KEEP") != ""
}

// TempDir returns a new empty directory that the postgres user owns and can
// reach, removed when the test ends. Use it for data directories that a test
// restores and then starts with StartDir.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := newServerDir("pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { removeDir(t, dir) })
	return dir
}

// newServerDir makes a directory for a server's files (data directory, log,
// Unix socket) that the server user owns and can reach.
func newServerDir(prefix string) (string, error) {
	su, err := lookupServerUser()
	if err != nil {
		return "", err
	}
	base := os.TempDir()
	if su != nil {
		base = "/var/tmp"
	}
	dir, err := os.MkdirTemp(base, prefix)
	if err != nil {
		return "", fmt.Errorf("make server directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("make server directory: %w", err)
	}
	if su != nil {
		if err := os.Chown(dir, int(su.uid), int(su.gid)); err != nil {
			return "", fmt.Errorf("make server directory: %w", err)
		}
	}
	return dir, nil
}

func removeDir(t testing.TB, dir string) {
	if keepDirs() {
		t.Logf("pgtest: PGSTOW_TEST_KEEP is set: keeping %s", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Logf("pgtest: remove %s: %v", dir, err)
	}
}

// handOverDataDir gives an existing data directory to the server user: chown
// -R and mode 0700 (postgres refuses group- or world-accessible ones), and
// makes sure the server user can traverse the directories above it. Only
// directories inside a temporary directory get o+x added; anything else that
// blocks the way is an error telling the caller to use TempDir.
func handOverDataDir(dataDir string) error {
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return err
	}
	su, err := lookupServerUser()
	if err != nil || su == nil {
		return err
	}
	err = filepath.WalkDir(dataDir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(su.uid), int(su.gid))
	})
	if err != nil {
		return fmt.Errorf("chown -R postgres %s: %w", dataDir, err)
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		if err := makeTraversable(su, dir); err != nil {
			return err
		}
		if dir == "/" {
			return nil
		}
	}
}

func makeTraversable(su *serverUser, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	mode := fi.Mode().Perm()
	switch {
	case st.Uid == su.uid && mode&0o100 != 0:
		return nil
	case st.Uid != su.uid && st.Gid == su.gid && mode&0o010 != 0:
		return nil
	case st.Uid != su.uid && st.Gid != su.gid && mode&0o001 != 0:
		return nil
	}
	for _, tmp := range []string{os.TempDir(), "/tmp", "/var/tmp"} {
		if rel, err := filepath.Rel(tmp, dir); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			return os.Chmod(dir, mode|0o111)
		}
	}
	return fmt.Errorf("the postgres user cannot traverse %s (mode %v): put data directories that servers "+
		"start from under pgtest.TempDir(t) or t.TempDir()", dir, mode)
}
