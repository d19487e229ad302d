// Package integration holds pgstow's end-to-end tests against real
// PostgreSQL servers; they start their own clusters with pgtest.
package integration

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pgstowBin is the pgstow binary built once for the tests that run it as
// a user would. It is built without -race: the race detector multiplies the
// CPU time of chunking, compression and hashing about tenfold, and the
// library packages it runs are race-checked in-process by these tests
// (backup.Run, restore.Run) and by their unit tests.
var pgstowBin string

// pgstowRaceBin is the same binary built with -race, for the tests whose
// subject is the CLI's own concurrency (signals, kills, concurrent runs,
// wal-receive's streaming): a data race in them makes it exit 66, which
// those tests' exit-code checks catch. They rate-limit their runs, so the
// detector costs them little time.
var pgstowRaceBin string

// defaultParallel is how many tests marked t.Parallel run at once unless
// -test.parallel (go test -parallel) says otherwise. Most of a test's time
// is spent waiting on servers (initdb, start, checkpoints, WAL switches),
// so more tests than cores keep the cores busy.
const defaultParallel = 4

func TestMain(m *testing.M) {
	flag.Parse()
	parallelGiven := false
	flag.Visit(func(f *flag.Flag) { parallelGiven = parallelGiven || f.Name == "test.parallel" })
	if !parallelGiven {
		if err := flag.Set("test.parallel", strconv.Itoa(defaultParallel)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	dir, err := os.MkdirTemp("", "pgstow-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pgstowBin = filepath.Join(dir, "pgstow")
	pgstowRaceBin = filepath.Join(dir, "pgstow-race")
	if err := buildCLI(pgstowBin, pgstowRaceBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildCLI builds pgstow without and with -race, both at once. GOFLAGS
// (such as -tags=lz4cgo from make test) reaches both builds.
func buildCLI(plain, race string) error {
	builds := []*exec.Cmd{
		exec.Command("go", "build", "-o", plain, "../cmd/pgstow"),
		exec.Command("go", "build", "-race", "-o", race, "../cmd/pgstow"),
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		wg.Go(func() {
			if err := b.Run(); err != nil {
				errs[i] = fmt.Errorf("%s: %w", strings.Join(b.Args, " "), err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
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
