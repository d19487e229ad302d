package localserver

import (
	"encoding/json"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseMajor(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", 15, true},
		{"postgres (PostgreSQL) 18.4\n", 18, true},
		{"postgres (PostgreSQL) 18beta1\n", 18, true},
		{"postgres (PostgreSQL) 17devel\n", 17, true},
		{"postgres (PostgreSQL) 9.6.24\n", 0, false},
		{"pg_ctl (PostgreSQL) 15.1\n", 15, true},
		{"postgres 15.1\n", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := parseMajor(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseMajor(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func writeState(t *testing.T, dir string, s Server) {
	t.Helper()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDiscardRefusals: Discard never touches a directory restore --start
// did not mark, treats a missing one as done, and never runs anything as
// root on the word of a state file.
func TestDiscardRefusals(t *testing.T) {
	t.Run("unmarked", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Discard(t.Context(), dir, false, nil); !errors.Is(err, ErrNotOurs) {
			t.Fatalf("Discard of an unmarked directory: %v, want ErrNotOurs", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
			t.Fatalf("the unmarked directory was touched: %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		removed, err := Discard(t.Context(), filepath.Join(t.TempDir(), "gone"), false, nil)
		if removed || err != nil {
			t.Fatalf("Discard of a missing directory: %v, %v; want false, nil", removed, err)
		}
	})
	t.Run("the state file cannot choose who runs pg_ctl", func(t *testing.T) {
		// A state file naming root and a bin directory of its own: the
		// "pg_ctl" there must run as the directory's owner.
		dir, bin, marker := reachableDir(t), reachableDir(t), reachableDir(t)
		if err := os.Chmod(marker, 0o777); err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\nid -u >> " + filepath.Join(marker, "ran") + "\n"
		if err := os.WriteFile(filepath.Join(bin, "pg_ctl"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte("1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		writeState(t, dir, Server{DataDir: dir, RunAs: "root", BinDir: bin})
		// Run as root, pgstow switches to the directory's owner; run as
		// anyone else, it stays itself. Either way, not the file's word.
		uid := os.Geteuid()
		if uid == 0 {
			var gid int
			uid, gid = postgresIDs(t)
			if err := os.Chown(dir, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := Discard(t.Context(), dir, true, nil); err != nil {
			t.Fatalf("Discard: %v", err)
		}
		ran, err := os.ReadFile(filepath.Join(marker, "ran"))
		if err != nil {
			t.Fatalf("pg_ctl did not run: %v", err)
		}
		if len(strings.Fields(string(ran))) == 0 {
			t.Fatal("pg_ctl ran but recorded no uid")
		}
		for _, line := range strings.Fields(string(ran)) {
			if line != strconv.Itoa(uid) {
				t.Fatalf("pg_ctl ran as uid %s, not the directory's owner %d", line, uid)
			}
		}
	})
}

// postgresIDs are the postgres OS user's uid and gid.
func postgresIDs(t *testing.T) (int, int) {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("the postgres OS user is needed: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// reachableDir is a temporary directory every user can enter.
func reachableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "pgstow-localserver-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDiscardRemovesOnlyOwnedTablespaces: a tablespace directory listed in
// the state file goes only if the server's user owns it.
func TestDiscardRemovesOnlyOwnedTablespaces(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	own := filepath.Join(t.TempDir(), "ts-own")
	other := filepath.Join(t.TempDir(), "ts-other")
	for _, d := range []string{dir, own, other} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 {
		// The server's user is the data directory's owner.
		uid, gid := postgresIDs(t)
		for _, d := range []string{dir, own} {
			if err := os.Chown(d, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(own, link); err != nil {
		t.Fatal(err)
	}
	writeState(t, dir, Server{DataDir: dir, RunAs: "root", Extra: []string{own, link, other}})
	removed, err := Discard(t.Context(), dir, false, nil)
	if err != nil || !removed {
		t.Fatalf("Discard: %v, %v", removed, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data directory still there: %v", err)
	}
	if _, err := os.Stat(own); !os.IsNotExist(err) {
		t.Errorf("the tablespace directory the server's user owns is still there: %v", err)
	}
	if _, err := os.Lstat(link); err != nil {
		t.Errorf("a symbolic link listed as a tablespace directory was removed: %v", err)
	}
	if os.Geteuid() == 0 {
		if _, err := os.Stat(other); err != nil {
			t.Errorf("a directory root owns was removed on the state file's word: %v", err)
		}
	}
}

// TestTail: the excerpt of a failed server's log keeps the lines that say
// why (FATAL, PANIC, ERROR) even when more lines follow them, and the end.
func TestTail(t *testing.T) {
	const fatal = "2026-12-06 03:51:18.170 UTC [9072] FATAL:  recovery ended before configured recovery target was reached"
	after := []string{
		"2026-12-06 03:51:18.178 UTC [9068] LOG:  startup process (PID 9072) exited with exit code 1",
		"2026-12-06 03:51:18.178 UTC [9068] LOG:  terminating any other active server processes",
		"2026-12-06 03:51:18.186 UTC [9113] LOG:  invalid length of startup packet",
		"2026-12-06 03:51:18.197 UTC [9068] LOG:  shutting down due to startup process failure",
		"2026-12-06 03:51:18.199 UTC [9068] LOG:  database system is shut down",
	}
	for _, tc := range []struct {
		name, log, want string
	}{
		{"empty", "\n", "(nothing)"},
		{"short", "a\nb\n", "a | b"},
		{"the last five", "1\n2\n3\n4\n5\n6\n7", "3 | 4 | 5 | 6 | 7"},
		{"the cause before the end", "started\n" + fatal + "\n" + strings.Join(after, "\n"), fatal + " | " + strings.Join(after, " | ")},
		{"the last three causes", "x ERROR:  1\nx ERROR:  2\nx PANIC:  3\nx FATAL:  4\n5\n6\n7\n8\n9", "x ERROR:  2 | x PANIC:  3 | x FATAL:  4 | 5 | 6 | 7 | 8 | 9"},
	} {
		if got := tail(tc.log); got != tc.want {
			t.Errorf("%s: tail = %q, want %q", tc.name, got, tc.want)
		}
	}
}
