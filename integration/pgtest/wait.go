package pgtest

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, failing the test when it has not
// after timeout. It is the one place the tests wait for something to
// happen outside their process (a server, a subprocess, the archiver), so
// every wait is bounded and says what it waited for.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Poll reports whether cond came to hold within timeout.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
