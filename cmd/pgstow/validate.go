package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"
)

// The checks below run before a command opens a repository or connects to
// a server: a mistyped value must cost nothing (no connection, no
// repository directory created, no lease taken) and exit 2 with one line
// naming the flag and what to give instead.

// positiveDuration refuses a duration of zero or less, for waits that
// have no "off".
func positiveDuration(flag string, d time.Duration, example string) error {
	if d <= 0 {
		return usageError{fmt.Errorf("--%s %s: give a duration above zero, e.g. %s", flag, d, example)}
	}
	return nil
}

// durationOrOff refuses a negative duration, for waits that 0 turns off.
func durationOrOff(flag string, d time.Duration, example string) error {
	if d < 0 {
		return usageError{fmt.Errorf("--%s %s: give a duration, e.g. %s, or 0 to turn it off", flag, d, example)}
	}
	return nil
}

// nonNegativeDuration refuses a negative duration, for waits where 0
// means "do not wait".
func nonNegativeDuration(flag string, d time.Duration, example string) error {
	if d < 0 {
		return usageError{fmt.Errorf("--%s %s: give a duration of 0 or more, e.g. %s", flag, d, example)}
	}
	return nil
}

// intRange refuses n outside lo..hi.
func intRange(flag string, n, lo, hi int) error {
	if n < lo || n > hi {
		return usageError{fmt.Errorf("--%s %d: give %d to %d", flag, n, lo, hi)}
	}
	return nil
}

// checkDSN parses the server's connection string as the connection will,
// without connecting. pgconn's parse errors hide the password.
func checkDSN(dsn string) error {
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		return usageError{fmt.Errorf("--pg (or PGSTOW_PG): give a libpq connection string or URL, e.g. \"host=db1 user=backup\": %w", err)}
	}
	return nil
}

// maxLabelBytes is PostgreSQL's limit on a backup label (MAXPGPATH).
const maxLabelBytes = 1024

// checkLabel refuses a label PostgreSQL would refuse, or one that would
// break the one-line LABEL entry of backup_label.
func checkLabel(label string) error {
	switch {
	case label == "":
		return usageError{errors.New("--label: give a non-empty label, e.g. nightly")}
	case len(label) > maxLabelBytes:
		return usageError{fmt.Errorf("--label: %d bytes, PostgreSQL accepts at most %d", len(label), maxLabelBytes)}
	case strings.ContainsFunc(label, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return usageError{fmt.Errorf("--label %q: give a label without line breaks or control characters", label)}
	}
	return nil
}

// checkSlotName applies PostgreSQL's rule for replication slot names.
func checkSlotName(slot string) error {
	if slot == "" {
		return usageError{errors.New("--slot is required: the physical replication slot to stream from (add --create-slot to create it)")}
	}
	if len(slot) > 63 || strings.ContainsFunc(slot, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_'
	}) {
		return usageError{fmt.Errorf("--slot %q: a slot name has 1 to 63 lower-case letters, digits and underscores", slot)}
	}
	return nil
}

// checkListenAddr checks a host:port to listen on, without resolving it.
func checkListenAddr(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError{fmt.Errorf("--%s %q: give HOST:PORT or :PORT, e.g. 127.0.0.1:9187", flag, addr)}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return usageError{fmt.Errorf("--%s %q: the port must be a number from 1 to 65535, e.g. 127.0.0.1:9187", flag, addr)}
	}
	return nil
}

// checkDir refuses a directory that does not exist; what names it (a flag
// or an environment variable) leads the message.
func checkDir(what, dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return usageError{fmt.Errorf("%s %s does not exist: create it or give an existing directory", what, dir)}
	case err != nil:
		return usageError{fmt.Errorf("%s: %w", what, err)}
	case !fi.IsDir():
		return usageError{fmt.Errorf("%s %s is not a directory: give an existing directory", what, dir)}
	}
	return nil
}

// checkFileDir refuses a file path whose directory does not exist, for
// files written at the end of a run (which would be lost after hours).
func checkFileDir(flag, path string) error {
	return checkDir("--"+flag+": the directory", filepath.Dir(path))
}

// checkRestoreTarget refuses a data directory or tablespace directory
// that exists and is not empty, as the restore would after reading the
// repository (and taking a lease there).
func checkRestoreTarget(flag, dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return usageError{fmt.Errorf("--%s: %w", flag, err)}
	case !fi.IsDir():
		return usageError{fmt.Errorf("--%s %s exists and is not a directory: give a directory that does not exist or is empty", flag, dir)}
	}
	f, err := os.Open(dir)
	if err != nil {
		return usageError{fmt.Errorf("--%s: %w", flag, err)}
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return usageError{fmt.Errorf("--%s: %w", flag, err)}
	}
	if len(names) > 0 {
		return usageError{fmt.Errorf("--%s %s is not empty (it holds %s): give a directory that does not exist or is empty", flag, dir, names[0])}
	}
	return nil
}

// checkOSUser refuses an OS user that does not exist, when it matters:
// only root runs the server as another user.
func checkOSUser(flag, name string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if name == "" {
		return usageError{fmt.Errorf("--%s: give the OS user to run the server as, e.g. postgres", flag)}
	}
	if _, err := user.Lookup(name); err != nil {
		return usageError{fmt.Errorf("--%s %q: no such OS user; give the user to run the server as, e.g. postgres", flag, name)}
	}
	return nil
}

// checkBinDir refuses a --pg-bin that does not hold pg_ctl and postgres.
func checkBinDir(flag, dir string) error {
	for _, name := range []string{"pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return usageError{fmt.Errorf("--%s %s: no %s there; give the bin directory of the backup's PostgreSQL major version, e.g. /usr/lib/postgresql/15/bin", flag, dir, name)}
		}
	}
	return nil
}

// checkGlobals checks the options every command that opens a repository
// shares, from flag or environment.
func (g *globals) checkGlobals(cmd *cobra.Command) error {
	if dir := g.spoolDirPath(cmd); dir != "" {
		what := "--spool-dir"
		if !cmd.Flags().Changed("spool-dir") {
			what = "PGSTOW_SPOOL_DIR"
		}
		if err := checkDir(what, dir); err != nil {
			return err
		}
	}
	return nil
}
