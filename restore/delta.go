package restore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/pgstow/pgstow/pgdata"
)

// DeltaCheck says how a delta restore judges a local file unchanged.
type DeltaCheck string

const (
	// DeltaChecksum keeps a file whose size and CRC32C match the
	// manifest's: every local file is read once. The default, and the
	// safe one.
	DeltaChecksum DeltaCheck = "checksum"
	// DeltaSizeMTime keeps a file whose size and modification time match
	// the manifest's, without reading it: faster, but blind to a change
	// that keeps both (a copy that preserved mtimes, a clock set back).
	DeltaSizeMTime DeltaCheck = "size-mtime"
)

// ParseDeltaCheck reads a --delta-check value; empty means DeltaChecksum.
func ParseDeltaCheck(s string) (DeltaCheck, error) {
	switch c := DeltaCheck(s); c {
	case DeltaChecksum, DeltaSizeMTime:
		return c, nil
	case "":
		return DeltaChecksum, nil
	}
	return "", fmt.Errorf("delta check %q: use %s or %s", s, DeltaChecksum, DeltaSizeMTime)
}

// ErrDeltaWithDatabases refuses Options.Delta with Options.Databases.
var ErrDeltaWithDatabases = errors.New("a delta restore and a restore of chosen databases are not supported together yet")

// deltaControlPath is where a delta restore moves the directory's
// pg_control before its first change: PostgreSQL cannot start the
// directory until the new pg_control is written last, and a re-run of an
// interrupted delta restore still finds the system identifier there.
const deltaControlPath = pgControlPath + ".pgstow-delta"

// postmasterPID is the file a running server keeps in its data directory.
const postmasterPID = "postmaster.pid"

// checkDeltaTarget decides, before anything is written, whether a delta
// restore into dir can go ahead: false (and no error) when dir is absent
// or empty, where a normal restore does the job; an error when a server
// runs there, when it is not a data directory, or when it holds another
// cluster than systemID's.
func checkDeltaTarget(dir, systemID string) (bool, error) {
	if err := checkEmpty(dir); err == nil {
		return false, nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return false, fmt.Errorf("check %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s exists and is not a directory", dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false, fmt.Errorf("check %s: %w", dir, err)
	}
	defer root.Close()
	if err := checkNoServer(root, dir); err != nil {
		return false, err
	}
	notData := func(why string) error {
		return fmt.Errorf("%s is not a PostgreSQL data directory (%s): a delta restore needs the directory of a stopped cluster of the backup's system, or an empty one", dir, why)
	}
	if fi, err := root.Lstat("PG_VERSION"); err != nil || !fi.Mode().IsRegular() {
		return false, notData("it has no PG_VERSION")
	}
	ctl, err := readSmall(root, pgControlPath)
	if errors.Is(err, os.ErrNotExist) {
		ctl, err = readSmall(root, deltaControlPath)
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, notData("it has neither " + pgControlPath + " nor " + deltaControlPath)
	}
	if err != nil {
		return false, fmt.Errorf("check %s: %w", dir, err)
	}
	id, err := pgdata.SystemIdentifier(ctl)
	if err != nil {
		return false, notData(pgControlPath + ": " + err.Error())
	}
	if strconv.FormatUint(id, 10) != systemID {
		return false, fmt.Errorf("%s holds the cluster of system identifier %d, and the backup is of system identifier %s: a delta restore only refreshes a directory of the same cluster; restore into an empty directory instead", dir, id, systemID)
	}
	return true, nil
}

// readSmall reads the first bytes of name (what SystemIdentifier needs,
// and more), not following a symlink at the last element.
func readSmall(root *os.Root, name string) ([]byte, error) {
	fi, err := root.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 512)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}

// checkNoServer refuses a directory whose postmaster.pid names a live
// process: kill(pid, 0) succeeds, or fails with EPERM (it exists, as
// another user's). A stale file (no such process) is fine: the delta
// restore removes it like anything else the backup lacks.
func checkNoServer(root *os.Root, dir string) error {
	data, err := root.ReadFile(postmasterPID)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path.Join(dir, postmasterPID), err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	pid, err := strconv.Atoi(string(bytes.TrimSpace(line)))
	if err != nil || pid <= 0 {
		return nil // not a pid: no server wrote it
	}
	if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("a server is running in %s (postmaster.pid names process %d, which is alive): stop it first, then run the delta restore again", dir, pid)
	}
	return nil
}

// startDelta moves global/pg_control aside before the first change, and
// makes the move durable: from then on the directory cannot be started
// until the restore writes the backup's pg_control last. An earlier
// interrupted delta restore left it moved already.
func startDelta(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer root.Close()
	fi, err := root.Lstat(pgControlPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("check %s: %w", path.Join(dir, pgControlPath), err)
	case !fi.Mode().IsRegular():
		// Not a pg_control to keep: removed like any wrong entry,
		// and the one moved aside before (checkDeltaTarget read it)
		// stays.
		if err := root.RemoveAll(pgControlPath); err != nil {
			return fmt.Errorf("remove %s: %w", path.Join(dir, pgControlPath), err)
		}
	default:
		if err := root.Rename(pgControlPath, deltaControlPath); err != nil {
			return fmt.Errorf("move %s aside: %w", path.Join(dir, pgControlPath), err)
		}
	}
	g, err := root.Open(path.Dir(pgControlPath))
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path.Join(dir, "global"), err)
	}
	defer g.Close()
	if err := g.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path.Join(dir, "global"), err)
	}
	return nil
}
