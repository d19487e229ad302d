// Package testserver starts the storage servers the provider tests run
// against (MinIO, versitygw, fake-gcs-server, Azurite) from the binaries
// scripts/install-deps.sh puts into .cache/. A missing binary fails the
// test with the command that installs it; nothing here ever skips.
package testserver

import (
	"errors"
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
	cmd    *exec.Cmd
	log    *LockedBuffer
	name   string
	exited chan struct{} // closed when the process has ended
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
	p := &Process{cmd: cmd, log: &LockedBuffer{}, name: name, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("testserver: start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("testserver: %s output:\n%s", name, p.log.String())
		}
	})
	return p
}

// errPortTaken says a server died because its port was taken between
// FreePort and its start; the caller starts it again on another port.
var errPortTaken = errors.New("port taken")

// startOnFreePort starts a server on a fresh port, and again on another
// when the port was taken meanwhile (ports are picked by binding and
// closing, so any other process may get there first).
func startOnFreePort(t testing.TB, start func(port int) (*Process, error)) *Process {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := start(FreePort(t))
		if err == nil {
			return p
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatalf("testserver: %v", err)
		}
		t.Logf("testserver: %s lost its port; starting it on another", p.name)
	}
}

// waitUp waits until url answers in a way ready accepts, or fails with
// the server's output; errPortTaken if it died for want of its port.
func (p *Process) waitUp(url string, timeout time.Duration, ready func(*http.Response) error) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			err = ready(resp)
			resp.Body.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-p.exited:
			out := p.log.String()
			if strings.Contains(out, "address already in use") || strings.Contains(out, "EADDRINUSE") {
				return fmt.Errorf("%s: %w", p.name, errPortTaken)
			}
			return fmt.Errorf("%s exited before answering %s; output:\n%s", p.name, url, out)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer %s within %s (last error %v); output:\n%s", p.name, url, timeout, err, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// listening accepts any answer below 500: it proves the server listens.
func listening(resp *http.Response) error {
	if resp.StatusCode >= 500 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// Addr formats a loopback address.
func Addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
