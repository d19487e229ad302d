package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
)

// markedBlocks returns the ```lang blocks between <!-- marker --> and
// <!-- /marker --> lines of a Markdown document, in order, concatenated
// exactly as written. It refuses a document without markers, with
// unbalanced or nested markers, with a marked region that holds no such
// block, or with an unterminated block: each would silently test less
// than the reader runs.
func markedBlocks(doc []byte, marker, lang string) (string, error) {
	open, closing, fence := "<!-- "+marker+" -->", "<!-- /"+marker+" -->", "```"+lang
	var (
		out                strings.Builder
		inRegion, inBlock  bool
		regions, regBlocks int
	)
	for i, line := range strings.Split(string(doc), "\n") {
		n := i + 1
		trimmed := strings.TrimSpace(line)
		switch {
		case inBlock && trimmed == "```":
			inBlock = false
		case inBlock:
			if trimmed == open || trimmed == closing {
				return "", fmt.Errorf("line %d: %s marker inside a code block", n, marker)
			}
			out.WriteString(line)
			out.WriteByte('\n')
		case trimmed == open:
			if inRegion {
				return "", fmt.Errorf("line %d: %s inside another %s region", n, open, marker)
			}
			inRegion, regBlocks = true, 0
			regions++
		case trimmed == closing:
			if !inRegion {
				return "", fmt.Errorf("line %d: %s without %s", n, closing, open)
			}
			if regBlocks == 0 {
				return "", fmt.Errorf("line %d: %s region without a %s block", n, marker, fence)
			}
			inRegion = false
		case inRegion && trimmed == fence:
			inBlock = true
			regBlocks++
		case inRegion && strings.HasPrefix(trimmed, "```"):
			return "", fmt.Errorf("line %d: only %s blocks may stand in a %s region, not %q", n, fence, marker, trimmed)
		}
	}
	switch {
	case inBlock:
		return "", fmt.Errorf("a %s block in a %s region is not closed", fence, marker)
	case inRegion:
		return "", fmt.Errorf("a %s region is not closed with %s", marker, closing)
	case regions == 0:
		return "", fmt.Errorf("no %s … %s markers", open, closing)
	}
	return out.String(), nil
}

// docBlocks reads a document of docs/ and returns its marked blocks.
func docBlocks(t *testing.T, name, marker, lang string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	text, err := markedBlocks(doc, marker, lang)
	if err != nil {
		t.Fatalf("docs/%s: %v", name, err)
	}
	return text
}

// walkthroughScript is the quickstart's runnable script.
func walkthroughScript(doc []byte) (string, error) { return markedBlocks(doc, "walkthrough", "sh") }

// TestDocsWalkthroughExtract: the extractor takes exactly the marked blocks
// and refuses documents that would make TestDocsWalkthrough test nothing.
func TestDocsWalkthroughExtract(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc string
		want      string // "" means an error is expected
	}{
		{"two regions", "intro\n```sh\nnot me\n```\n<!-- walkthrough -->\ntext\n```sh\na\n\nb\n```\n<!-- /walkthrough -->\nmore\n<!-- walkthrough -->\n```sh\nc\n```\n```sh\nd\n```\n<!-- /walkthrough -->\n",
			"a\n\nb\nc\nd\n"},
		{"no markers", "# Quickstart\n```sh\necho hi\n```\n", ""},
		{"open only", "<!-- walkthrough -->\n```sh\necho hi\n```\n", ""},
		{"close only", "```sh\necho hi\n```\n<!-- /walkthrough -->\n", ""},
		{"nested", "<!-- walkthrough -->\n<!-- walkthrough -->\n```sh\necho\n```\n<!-- /walkthrough -->\n", ""},
		{"empty region", "<!-- walkthrough -->\ntext\n<!-- /walkthrough -->\n", ""},
		{"unclosed block", "<!-- walkthrough -->\n```sh\necho\n<!-- /walkthrough -->\n", ""},
		{"other language", "<!-- walkthrough -->\n```bash\necho\n```\n<!-- /walkthrough -->\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := walkthroughScript([]byte(tt.doc))
			switch {
			case tt.want == "" && err == nil:
				t.Fatalf("accepted, giving %q", got)
			case tt.want != "" && err != nil:
				t.Fatalf("refused: %v", err)
			case got != tt.want:
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestDocsWalkthrough runs the walk-through of docs/quickstart.md as one
// `bash -euo pipefail` script, the way a new user pastes it: as the postgres
// OS user, against Debian's PostgreSQL 15, with this build of pgstow. Any
// failing command or check fails the test with the script's output.
func TestDocsWalkthrough(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/quickstart.md")
	if err != nil {
		t.Fatal(err)
	}
	script, err := walkthroughScript(doc)
	if err != nil {
		t.Fatalf("docs/quickstart.md: %v", err)
	}

	// Both directories belong to the postgres user, which can reach them
	// (pgstowBin sits in a 0700 directory of ours). WORK is fresh, as on a
	// new machine; the script and the binary live beside it.
	tools := pgtest.TempDir(t)
	work := pgtest.TempDir(t)
	bin := filepath.Join(tools, "pgstow")
	copyExecutable(t, pgstowBin, bin)
	scriptPath := filepath.Join(tools, "walkthrough.sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	// Registered after the directories, so it runs before they go: stop
	// whatever the script left running, also when it failed half-way.
	t.Cleanup(func() { stopServersUnder(t, work) })

	port := freePort(t)
	restorePort := freePort(t)
	for restorePort == port {
		restorePort = freePort(t)
	}
	vars := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + tools,
		"LANG=C.UTF-8",
		"WORK=" + work,
		"PGBIN=" + pg15Bin,
		"PGSTOW=" + bin,
		fmt.Sprintf("PORT=%d", port),
		fmt.Sprintf("RESTORE_PORT=%d", restorePort),
	}
	// env -i: nothing of the test's environment (PG*, PGSTOW_*) leaks in.
	args := append([]string{"env", "-i"}, vars...)
	args = append(args, "bash", "-euo", "pipefail", scriptPath)
	out, err := runAsServerUser(t.Context(), 5*time.Minute, args...)
	if err != nil {
		t.Errorf("the docs/quickstart.md walk-through failed: %v\n%s", err, out)
		logServerLogs(t, work)
		t.FailNow()
	}
	t.Logf("walk-through output:\n%s", out)
}

// runAsServerUser runs a command as the postgres OS user (directly when
// the tests do not run as root) and returns its combined output. On
// timeout the whole process group is killed.
func runAsServerUser(ctx context.Context, timeout time.Duration, args ...string) ([]byte, error) {
	if os.Geteuid() == 0 {
		args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = "/" // the test's directory may be closed to postgres
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A server started without -l would hold the output pipe open.
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (not finished within %s)", err, timeout)
	}
	return out.Bytes(), err
}

// stopServersUnder stops, with pg_ctl stop -m immediate, every server whose
// data directory lies directly under work.
func stopServersUnder(t *testing.T, work string) {
	pids, _ := filepath.Glob(filepath.Join(work, "*", "postmaster.pid"))
	for _, pid := range pids {
		dataDir := filepath.Dir(pid)
		// t.Context() is already cancelled when cleanups run.
		out, err := runAsServerUser(context.Background(), time.Minute, filepath.Join(pg15Bin, "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", dataDir)
		if err != nil {
			t.Logf("pg_ctl stop -D %s: %v\n%s", dataDir, err, out)
		}
	}
}

// logServerLogs shows the server logs the walk-through writes to WORK.
func logServerLogs(t *testing.T, work string) {
	logs, _ := filepath.Glob(filepath.Join(work, "*.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			t.Logf("%s:\n%s", l, b)
		}
	}
}

// copyExecutable copies the binary src to dst, mode 0755.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}
