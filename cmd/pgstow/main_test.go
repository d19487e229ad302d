package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
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
		if got := humanBytes(in); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

// TestUsageErrors: mistakes in how pgstow is called exit 2 with one line,
// before touching any server.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"list"}, nil, "PGSTOW_REPO"},
		{[]string{"list", "--repo", "nope"}, nil, "no scheme"},

		{[]string{"backup", "--repo", "file:///tmp/x", "--chunk-size", "12"}, nil, "--chunk-size"},
		{[]string{"backup", "--repo", "file:///tmp/x", "--checkpoint", "now"}, nil, "--checkpoint"},
		{[]string{"backup", "--repo", "file:///tmp/x", "--concurrency", "0"}, nil, "--concurrency"},
		{[]string{"backup", "--repo", "file:///tmp/x", "--max-rate", "fast"}, nil, "--max-rate"},
		{[]string{"backup", "--bogus"}, nil, "unknown flag"},
		{[]string{"verify", "--repo", "file:///tmp/x", "--wal", "--repair"}, nil, "--repair mends chunks of backups"},
		{[]string{"list", "--log-format", "xml"}, nil, "--log-format"},
		{[]string{"list"}, map[string]string{"PGSTOW_REPO": "gopher://x"}, "unknown scheme"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb, func(k string) string { return tt.env[k] })
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitUsage, errb.String())
			}
			msg := strings.TrimSpace(errb.String())
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tt.want) {
				t.Fatalf("stderr %q, want one line containing %q", msg, tt.want)
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
	for _, c := range root.Commands() {
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
