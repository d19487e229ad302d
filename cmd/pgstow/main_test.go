package main

import (
	"github.com/spf13/cobra"

	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/repository"
)

func TestOneLine(t *testing.T) {
	tests := map[string]string{
		"plain":                          "plain",
		"a:\n\tb refused\n\tb refused\n": "a: b refused",
		"x\n\ny":                         "x y",
	}
	for in, want := range tests {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	tests := map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"}
	for in, want := range tests {
		if got := manifest.HumanBytes(in); got != want {
			t.Errorf("manifest.HumanBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

// TestUsageErrors: mistakes in how pgstow is called exit 2 with one line
// naming the flag, before touching anything: the repository directory
// REPO stands for is never created, and the server DEADPG names (a port
// nothing listens on) would turn a late check into a connection error.
func TestUsageErrors(t *testing.T) {
	type row struct {
		args []string
		env  map[string]string
		want string
		code int // 0: exitUsage
	}
	tests := []row{
		{args: []string{"list"}, want: "PGSTOW_REPO"},
		{args: []string{"list", "--repo", "nope"}, want: "no scheme"},
		{args: []string{"list", "--log-format", "xml"}, want: "--log-format"},
		{args: []string{"list", "--log-level", "loud"}, want: "--log-level"},
		{args: []string{"list"}, env: map[string]string{"PGSTOW_REPO": "gopher://x"}, want: "unknown scheme"},
		{args: []string{"backup", "--bogus"}, want: "unknown flag"},

		// Repository URLs are parsed in full before anything is opened.
		{args: []string{"backup", "--repo", "REPO?mode=fast", "--pg", "DEADPG"}, want: "query parameters"},
		{args: []string{"backup", "--repo", "s3://bucket/pg?regoin=eu-west-1", "--pg", "DEADPG"}, want: `unknown parameter "regoin"`},
		{args: []string{"backup", "--repo", "s3://bucket/pg?part_size=1MB", "--pg", "DEADPG"}, want: "part size"},
		{args: []string{"backup", "--repo", "gs://bucket/pg?colour=red", "--pg", "DEADPG"}, want: "colour"},
		{args: []string{"backup", "--repo", "azblob://container/pg?colour=red", "--pg", "DEADPG"}, want: "colour"},

		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--chunk-size", "12"}, want: "--chunk-size"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--checkpoint", "now"}, want: "--checkpoint"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--concurrency", "0"}, want: "--concurrency"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--max-rate", "fast"}, want: "--max-rate"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--max-rate", "1"}, want: "--max-rate \"1\": give a rate per second from 32kB to 1GB"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--max-rate", "2GB"}, want: "--max-rate"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--wal", "sometimes"}, want: "--wal"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--wal-timeout", "-5s"}, want: "--wal-timeout -5s: give a duration above zero"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--wal-timeout", "0"}, want: "--wal-timeout"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--io-timeout", "-1s"}, want: "--io-timeout"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--server-compression", "brotli"}, want: "--server-compression"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--label", ""}, want: "--label"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--label", "two\nlines"}, want: "--label"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--label", strings.Repeat("x", 1025)}, want: "--label"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "host=127.0.0.1 port=notaport"}, want: "--pg"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--progress", "sometimes"}, want: "--progress"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--progress-interval", "0"}, want: "--progress-interval"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--metrics-file", "MISSING/pgstow.prom"}, want: "--metrics-file"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--metrics-push", "pushgateway:9091"}, want: "metrics"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG", "--spool-dir", "MISSING"}, want: "--spool-dir"},
		{args: []string{"backup", "--repo", "REPO", "--pg", "DEADPG"}, env: map[string]string{"PGSTOW_SPOOL_DIR": "MISSING"}, want: "PGSTOW_SPOOL_DIR"},

		{args: []string{"restore", "--repo", "REPO"}, want: "--pgdata"},
		{args: []string{"restore", "--repo", "REPO", "-D", "FULL"}, want: "is not empty"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--tablespace", "16384=FULL"}, want: "--tablespace"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--tablespace", "16384=/a", "--tablespace", "16384=/b"}, want: "given twice"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--tablespace", "x=/a"}, want: "--tablespace"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--wal", "later"}, want: "--wal"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--concurrency", "0"}, want: "--concurrency"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--sync-method", "never"}, want: "--sync-method"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-action", "pause"}, want: "--target-action only applies with a recovery target"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-timeline", "2"}, want: "--target-timeline only applies"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-immediate", "--target-action", "explode"}, want: "--target-action"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-immediate", "--target-timeline", "newest"}, want: "--target-timeline"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-xid", "abc"}, want: "--target-xid"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-lsn", "0/zz"}, want: "--target-lsn"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-time", "yesterday"}, want: "--target-time"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-time", "2026-11-23 21:00:00"}, want: "with a zone"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-name", "x", "--target-xid", "7"}, want: "give one recovery target"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--target-immediate", "--wal", "embed"}, want: "--wal=fetch"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--port", "5433"}, want: "--port only applies with --start"},
		{args: []string{"restore", "--repo", "REPO", "-D", "FULL", "--delta", "--database", "app"}, want: "not supported together yet"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--delta-check", "size-mtime"}, want: "--delta-check only applies with --delta"},
		{args: []string{"restore", "--repo", "REPO", "-D", "FULL", "--delta", "--delta-check", "mtime"}, want: "--delta-check"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--database", ""}, want: "--database"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--start", "--port", "70000"}, want: "--port"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--start", "--start-timeout", "0"}, want: "--start-timeout"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--start", "--pg-bin", "MISSING"}, want: "--pg-bin"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--start", "--user", ""}, want: "--user"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--start", "--target-immediate", "--target-action", "shutdown"}, want: "shutdown"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--label", "x", "--backup", "latest"}, want: "--label"},
		{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--progress-interval", "-1s"}, want: "--progress-interval"},

		{args: []string{"verify", "--repo", "REPO", "--wal", "--repair"}, want: "--repair mends chunks of backups"},
		{args: []string{"verify", "--repo", "REPO", "--all", "latest"}, want: "not both"},
		{args: []string{"verify", "--repo", "REPO", "--concurrency", "0"}, want: "--concurrency"},
		{args: []string{"verify", "--repo", "REPO", "--concurrency", "1000"}, want: "--concurrency"},
		{args: []string{"verify", "--repo", "REPO", "--lock-wait", "1m"}, want: "--lock-wait only applies with --repair"},
		{args: []string{"verify", "--repo", "REPO", "--repair", "--lock-wait", "-1m"}, want: "--lock-wait"},

		{args: []string{"delete", "--repo", "REPO"}, want: "delete"},
		{args: []string{"delete", "--repo", "REPO", "--retain-last", "0"}, want: "--retain-last"},
		{args: []string{"delete", "--repo", "REPO", "--retain-within", "a while"}, want: "--retain-within"},
		{args: []string{"delete", "--repo", "REPO", "--retain-last", "2", "--lock-wait", "-1s"}, want: "--lock-wait"},
		{args: []string{"gc", "--repo", "REPO", "--grace", "-1h"}, want: "--grace"},
		{args: []string{"gc", "--repo", "REPO", "--lock-wait", "-1s"}, want: "--lock-wait"},

		{args: []string{"wal-push", "--repo", "REPO", "--ahead", "-1", "pg_wal/000000010000000000000001"}, want: "--ahead"},
		{args: []string{"wal-push", "--repo", "REPO", "--ahead", "100000", "pg_wal/000000010000000000000001"}, want: "--ahead"},
		{args: []string{"wal-push", "--repo", "REPO"}, want: "arg"},
		// wal-fetch exits 128 on any failure but "not archived", so that
		// PostgreSQL stops recovery rather than end it early.
		{args: []string{"wal-fetch", "--repo", "REPO", "--prefetch", "-1", "000000010000000000000001", "NEW"}, want: "--prefetch", code: exitWALFatal},

		{args: []string{"wal-receive", "--repo", "REPO", "--pg", "DEADPG"}, want: "--slot is required"},
		{args: []string{"wal-receive", "--repo", "REPO", "--pg", "DEADPG", "--slot", "Bad-Name"}, want: "--slot"},
		{args: []string{"wal-receive", "--repo", "REPO", "--pg", "DEADPG", "--slot", "s", "--io-timeout", "-1s"}, want: "--io-timeout"},
		{args: []string{"wal-receive", "--repo", "REPO", "--pg", "DEADPG", "--slot", "s", "--metrics-listen", "9187"}, want: "--metrics-listen"},
		{args: []string{"wal-receive", "--repo", "REPO", "--pg", "port=x", "--slot", "s"}, want: "--pg"},

		{args: []string{"discard"}, want: "--pgdata"},
	}
	if os.Geteuid() == 0 {
		// Only root runs the server as another user.
		tests = append(tests, row{args: []string{"restore", "--repo", "REPO", "-D", "NEW", "--start", "--run-as", "no-such-user-pgstow"}, want: "--run-as"})
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			dir := t.TempDir()
			repoDir := filepath.Join(dir, "repo")
			full := filepath.Join(dir, "full")
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(full, "PG_VERSION"), []byte("15\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			dead := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres connect_timeout=2", ln.Addr().(*net.TCPAddr).Port)
			ln.Close()
			subst := strings.NewReplacer("REPO", "file://"+repoDir, "DEADPG", dead, "MISSING", filepath.Join(dir, "missing"), "FULL", full, "NEW", filepath.Join(dir, "new"))
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = subst.Replace(a)
			}
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = subst.Replace(v)
			}
			var out, errb bytes.Buffer
			code := run(args, &out, &errb, func(k string) string { return env[k] })
			want := tt.code
			if want == 0 {
				want = exitUsage
			}
			if code != want {
				t.Fatalf("exit %d, want %d; stderr %q", code, want, errb.String())
			}
			msg := strings.TrimSpace(errb.String())
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tt.want) {
				t.Fatalf("stderr %q, want one line containing %q", msg, tt.want)
			}
			if _, err := os.Stat(repoDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the repository directory was created before the usage error")
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, &out, func(string) string { return "" }); code != 0 || !strings.HasPrefix(out.String(), "pgstow ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
}

// TestEveryCommandExplainsItself: every command's --help has examples, and
// every command that prints a result can print it as JSON.
func TestEveryCommandExplainsItself(t *testing.T) {
	g := &globals{getenv: func(string) string { return "" }}
	root := newRootCmd(g)
	noJSON := map[string]bool{"wal-push": true, "wal-fetch": true, "wal-receive": true, "discard": true}
	var commands []*cobra.Command
	for _, c := range root.Commands() {
		if c.HasSubCommands() && c.Name() != "completion" {
			// A group (pgstow repo): its commands explain themselves.
			commands = append(commands, c.Commands()...)
			continue
		}
		commands = append(commands, c)
	}
	for _, c := range commands {
		if c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		t.Run(c.Name(), func(t *testing.T) {
			if strings.TrimSpace(c.Example) == "" {
				t.Errorf("%s --help has no examples", c.Name())
			}
			if c.Short == "" {
				t.Errorf("%s has no short description", c.Name())
			}
			if !noJSON[c.Name()] && c.Flags().Lookup("json") == nil {
				t.Errorf("%s has no --json", c.Name())
			}
		})
	}
}

// TestCompletion: the shells' completion scripts come out of the binary.
func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "bash completion", "zsh": "#compdef pgstow", "fish": "complete -c pgstow", "powershell": "Register-ArgumentCompleter"} {
		t.Run(shell, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{"completion", shell}, &out, &errb, func(string) string { return "" }); code != 0 {
				t.Fatalf("completion %s: exit %d %s", shell, code, errb.String())
			}
			if !strings.Contains(out.String(), want) {
				t.Errorf("completion %s does not contain %q", shell, want)
			}
		})
	}
}

// TestMissingFileRepository: only commands that write create a file://
// repository; a mistyped path is an error for the rest, and wal-fetch
// must not call it "not archived" (exit 1), which would end recovery.
func TestMissingFileRepository(t *testing.T) {
	missing := t.TempDir() + "/typo"
	for _, args := range [][]string{
		{"list"}, {"show", "latest"}, {"verify"}, {"gc"}, {"restore", "-D", t.TempDir() + "/r"},
		{"wal-fetch", "000000010000000000000001", t.TempDir() + "/seg"},
	} {
		t.Run(args[0], func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append(args, "--repo", "file://"+missing), &out, &errb, func(string) string { return "" })
			want := exitFailure
			if args[0] == "wal-fetch" {
				want = exitWALFatal
			}
			if code != want || !strings.Contains(errb.String(), "does not exist") {
				t.Errorf("exit %d, stderr %q; want %d and a missing directory named", code, errb.String(), want)
			}
			if _, err := os.Stat(missing); !os.IsNotExist(err) {
				t.Fatalf("%s created the mistyped repository directory", args[0])
			}
		})
	}
}

// TestKeyFileMode: a key file other users may read or write is refused
// (exit 2, naming the file, its mode and the fix) unless
// --allow-shared-key-file says otherwise; a root-owned file may be
// readable by its group, as PostgreSQL allows for ssl_key_file.
func TestKeyFileMode(t *testing.T) {
	const key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
	type row struct {
		name  string
		mode  os.FileMode
		owner int // uid to chown to when running as root; -1 keeps it
		allow bool
		want  int
	}
	tests := []row{
		{"owner only", 0o600, -1, false, exitOK},
		{"read-only", 0o400, -1, false, exitOK},
		{"world-readable", 0o644, -1, false, exitUsage},
		{"other-readable only", 0o604, -1, false, exitUsage},
		{"group-writable", 0o620, -1, false, exitUsage},
		{"world-readable, allowed", 0o644, -1, true, exitOK},
	}
	if os.Geteuid() == 0 {
		// A root-owned key may be shared with a group, read-only; a
		// group-readable key of anyone else may not.
		tests = append(tests,
			row{"root-owned, group-readable", 0o640, 0, false, exitOK},
			row{"root-owned, group-writable", 0o660, 0, false, exitUsage},
			row{"user-owned, group-readable", 0o640, 65534, false, exitUsage})
	} else {
		tests = append(tests, row{"group-readable", 0o640, -1, false, exitUsage})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "repo.key")
			if err := os.WriteFile(path, []byte(key), 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.owner >= 0 {
				if err := os.Chown(path, tt.owner, tt.owner); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			args := []string{"list", "--repo", "file://" + dir, "--encryption-key-file", path}
			if tt.allow {
				args = append(args, "--allow-shared-key-file")
			}
			var out, errb bytes.Buffer
			code := run(args, &out, &errb, func(string) string { return "" })
			if code != tt.want {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.want, errb.String())
			}
			msg := strings.TrimSpace(errb.String())
			if tt.want == exitUsage {
				for _, s := range []string{path, fmt.Sprintf("mode %04o", tt.mode), "chmod 600", "--allow-shared-key-file"} {
					if !strings.Contains(msg, s) || strings.Contains(msg, "\n") {
						t.Errorf("stderr %q: want one line containing %q", msg, s)
					}
				}
			}
		})
	}
}

// TestEncryptedRepositoryWithoutKey: with no key given, the message says
// the repository is encrypted and how to give the key, not that a key
// "does not fit".
func TestEncryptedRepositoryWithoutKey(t *testing.T) {
	dir := t.TempDir()
	key, err := encryption.ParseKey([]byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := file.Open(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := repository.NewEncrypted(store, key).Bind(t.Context(), "7000000000000000001", 16<<20); err != nil {
		t.Fatal(err)
	}
	store.Close()
	var out, errb bytes.Buffer
	code := run([]string{"list", "--repo", "file://" + dir}, &out, &errb, func(string) string { return "" })
	msg := strings.TrimSpace(errb.String())
	if code != exitFailure {
		t.Fatalf("exit %d, want %d; stderr %q", code, exitFailure, msg)
	}
	for _, want := range []string{"is encrypted", key.Fingerprint(), "no key was given", "--encryption-key-file", "PGSTOW_ENCRYPTION_KEY_FILE"} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "does not fit") || strings.Contains(msg, "\n") {
		t.Errorf("stderr %q: want one line that does not speak of a key that does not fit", msg)
	}
}

// TestKeyFileModeWALPush: archive_command only warns about a shared key
// file: refusing would stop archiving and fill pg_wal.
func TestKeyFileModeWALPush(t *testing.T) {
	const key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
	dir := t.TempDir()
	path := filepath.Join(dir, "repo.key")
	if err := os.WriteFile(path, []byte(key), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(dir, "000000010000000000000001")
	if err := os.WriteFile(seg, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"wal-push", "--repo", "file://" + filepath.Join(dir, "repo"), "--encryption-key-file", path, seg}, &out, &errb, func(string) string { return "" })
	if code == exitUsage || !strings.Contains(errb.String(), "wal-push goes on") || !strings.Contains(errb.String(), "mode 0644") {
		t.Errorf("wal-push with a shared key file: exit %d, stderr %q; want a warning and no refusal", code, errb.String())
	}
}

// The hidden profiling flags write their files when the command ends, and
// an unwritable path is a usage error (exit 2) that leaves nothing running.
func TestProfileFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		flags []string
		code  int
		files []string
	}{
		{"trace and CPU profile", []string{"--trace", filepath.Join(dir, "a.trace"), "--cpuprofile", filepath.Join(dir, "a.prof")}, 0, []string{"a.trace", "a.prof"}},
		{"memory profile", []string{"--memprofile", filepath.Join(dir, "b.mprof")}, 0, []string{"b.mprof"}},
		{"trace unwritable", []string{"--trace", filepath.Join(dir, "missing", "c.trace")}, 2, nil},
		{"CPU profile unwritable after a trace", []string{"--trace", filepath.Join(dir, "d.trace"), "--cpuprofile", filepath.Join(dir, "missing", "d.prof")}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(append([]string{"version"}, tc.flags...), &stdout, &stderr, func(string) string { return "" }); code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, stderr.String())
			}
			for _, f := range tc.files {
				if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
					t.Errorf("%s: %v, want a non-empty file", f, err)
				}
			}
		})
	}
	// A run after the failed ones can trace again: the failed start
	// stopped the trace it had begun.
	var stderr bytes.Buffer
	if code := run([]string{"version", "--trace", filepath.Join(dir, "e.trace")}, io.Discard, &stderr, func(string) string { return "" }); code != 0 {
		t.Fatalf("trace after a failed start: exit %d: %s", code, stderr.String())
	}
}
