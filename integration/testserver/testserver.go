// Package testserver starts the storage servers the provider tests run
// against (MinIO, versitygw, fake-gcs-server, Azurite) from the binaries
// scripts/install-deps.sh puts into .cache/. A missing binary fails the
// test with the command that installs it; nothing here ever skips.
package testserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// RepoRoot finds the module root (where go.mod is) from the working
// directory of the test.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testserver: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Binary returns the path of a server binary under .cache/, or fails the
// test saying how to install it. rel is relative to .cache/, e.g.
// "bin/minio" or "azurite/node_modules/.bin/azurite-blob".
func Binary(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(RepoRoot(t), ".cache", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("testserver: %s is missing; install the test servers with: bash scripts/install-deps.sh (or make deps)", p)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Process is a running server.
type Process struct {
	cmd  *exec.Cmd
	log  *LockedBuffer
	name string
}

// LockedBuffer collects a child process's output, up to 1 MiB, while a
// test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs a server process until the test ends, then kills it.
func Start(t testing.TB, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &Process{cmd: cmd, log: &LockedBuffer{}, name: name}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("testserver: start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("testserver: %s output:\n%s", name, p.log.String())
		}
	})
	return p
}

// WaitHTTP waits until url answers with a status below 500 (any answer
// proves the server listens), or fails the test with the server's output.
func (p *Process) WaitHTTP(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testserver: %s did not answer %s within %s (last error %v); output:\n%s", p.name, url, timeout, err, p.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Addr formats a loopback address.
func Addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
