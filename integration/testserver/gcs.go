package testserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// GCSServer is a running fake-gcs-server, an in-memory emulator of the
// Google Cloud Storage JSON and XML APIs.
type GCSServer struct {
	// Endpoint is the server's host:port on 127.0.0.1, the form
	// STORAGE_EMULATOR_HOST takes. It speaks plain HTTP and needs no
	// credentials.
	Endpoint string

	buckets atomic.Int64
}

// StartFakeGCS starts fake-gcs-server from .cache/bin on a free loopback
// port with the in-memory backend, and stops it when the test ends.
//
// -public-host and -external-url must name the address the clients use:
// the server answers XML-API reads (which the Go client uses for ranged
// reads) only for that host, and returns resumable upload URLs on it.
func StartFakeGCS(t testing.TB) *GCSServer {
	t.Helper()
	bin := Binary(t, "bin/fake-gcs-server")
	var addr string
	startOnFreePort(t, func(port int) (*Process, error) {
		addr = Addr(port)
		p := Start(t, "fake-gcs-server", nil, bin,
			"-scheme", "http",
			"-host", "127.0.0.1",
			"-port", fmt.Sprint(port),
			"-public-host", addr,
			"-external-url", "http://"+addr,
			"-backend", "memory",
			"-log-level", "warn",
		)
		return p, p.waitUp("http://"+addr+"/storage/v1/b", 30*time.Second, listening)
	})
	return &GCSServer{Endpoint: addr}
}

// NewBucket creates a bucket with a name unique on this server and returns
// the name. It talks to the JSON API directly, so that only the GCS
// provider imports the cloud SDK.
func (s *GCSServer) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("pgstow-test-%04d", s.buckets.Add(1))
	body, err := json.Marshal(map[string]string{"name": name})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "http://" + s.Endpoint + "/storage/v1/b?project=pgstow-test"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("testserver: create bucket %s on fake-gcs-server: %v", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("testserver: create bucket %s on fake-gcs-server: %s: %s", name, resp.Status, strings.TrimSpace(string(msg)))
	}
	return name
}
