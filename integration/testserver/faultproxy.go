package testserver

import (
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FaultProxy is an HTTP proxy in front of a storage server that answers a
// share of requests with 503 SlowDown and drops another share by closing
// the connection without an answer: half of the drops before forwarding,
// half after the server has acted on the request (the worst case: the
// write happened, the client never heard).
type FaultProxy struct {
	URL              string // http://127.0.0.1:P
	Requests         atomic.Int64
	Slowdowns, Drops atomic.Int64
	slowdownP, dropP float64
	mu               sync.Mutex
	rng              *rand.Rand
	enabled          atomic.Bool
}

// StartFaultProxy proxies to upstream (e.g. "http://127.0.0.1:9000").
func StartFaultProxy(t testing.TB, upstream string, slowdownP, dropP float64) *FaultProxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	// A new seed each run explores other interleavings; it is logged so a
	// failure can be replayed.
	seed := uint64(time.Now().UnixNano())
	t.Logf("testserver: fault proxy seed %d", seed)
	fp := &FaultProxy{slowdownP: slowdownP, dropP: dropP, rng: rand.New(rand.NewPCG(seed, 2))}
	fp.enabled.Store(true)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			// Keep the Host the client signed (S3 SigV4 covers it).
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1,
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fp.Requests.Add(1)
		dice := fp.roll()
		switch {
		case !fp.enabled.Load():
		case dice < fp.slowdownP:
			fp.Slowdowns.Add(1)
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		case dice < fp.slowdownP+fp.dropP/2:
			fp.Drops.Add(1)
			drop(w)
			return
		case dice < fp.slowdownP+fp.dropP:
			fp.Drops.Add(1)
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			drop(w)
			return
		}
		rp.ServeHTTP(w, r)
	})
	fp.URL = startLoopback(t, handler).URL
	return fp
}

// SetEnabled turns fault injection on or off (e.g. for setup steps).
func (fp *FaultProxy) SetEnabled(on bool) { fp.enabled.Store(on) }

func (fp *FaultProxy) roll() float64 {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.rng.Float64()
}

// drop closes the client's connection without an answer.
func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("testserver: response writer cannot be hijacked")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset, as a dying load balancer sends
		}
		conn.Close()
	}
}
