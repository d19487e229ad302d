// Package integration holds pgstow's end-to-end tests against real
// PostgreSQL servers; they start their own clusters with pgtest.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pgstowBin is the pgstow binary built once for the tests that run it as
// a user would.
var pgstowBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pgstow-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pgstowBin = filepath.Join(dir, "pgstow")
	build := exec.Command("go", "build", "-race", "-o", pgstowBin, "../cmd/pgstow")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build pgstow:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cliResult is what one run of the pgstow binary did.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs pgstow with a clean environment plus env.
func runCLI(t *testing.T, timeout time.Duration, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgstowBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errb.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run pgstow %s: %v", strings.Join(args, " "), err)
		}
		r.code = ee.ExitCode()
	}
	if ctx.Err() != nil {
		t.Fatalf("pgstow %s did not finish within %s; stderr:\n%s", strings.Join(args, " "), timeout, r.stderr)
	}
	return r
}
