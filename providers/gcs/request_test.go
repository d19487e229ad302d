package gcs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pgstow/pgstow/providers"
)

func TestObjectURL(t *testing.T) {
	for _, tc := range []struct {
		api, name, want string
	}{
		{"http://127.0.0.1:4443/storage/v1/", "a/b", "http://127.0.0.1:4443/storage/v1/b/bucket/o/a%2Fb"},
		{"https://storage.googleapis.com/storage/v1/", "p/with space+plus%25?#&=;", "https://storage.googleapis.com/storage/v1/b/bucket/o/p%2Fwith%20space%2Bplus%2525%3F%23%26%3D%3B"},
		{"https://storage.googleapis.com/storage/v1/", "ünï/~._-", "https://storage.googleapis.com/storage/v1/b/bucket/o/%C3%BCn%C3%AF%2F~._-"},
		{"http://h/a%20b/", "k", "http://h/a%20b/b/bucket/o/k"},
	} {
		api, err := url.Parse(tc.api)
		if err != nil {
			t.Fatal(err)
		}
		s := &Store{api: api, cfg: Config{Bucket: "bucket"}}
		u := s.objectURL(tc.name, nil)
		if got := u.String(); got != tc.want {
			t.Errorf("objectURL(%q) = %s, want %s", tc.name, got, tc.want)
		}
		// What a server decodes must be the name again.
		back, err := url.Parse(u.String())
		if err != nil {
			t.Fatal(err)
		}
		seg := back.EscapedPath()[strings.LastIndex(back.EscapedPath(), "/")+1:]
		if name, err := url.PathUnescape(seg); err != nil || name != tc.name {
			t.Errorf("objectURL(%q): the last segment decodes to %q, %v", tc.name, name, err)
		}
	}
}

func TestRangeHeader(t *testing.T) {
	for _, tc := range []struct {
		offset, length int64
		want           string
	}{
		{0, -1, ""},
		{10, -1, "bytes=10-"},
		{0, 1, "bytes=0-0"},
		{5, 3, "bytes=5-7"},
	} {
		if got := rangeHeader(tc.offset, tc.length); got != tc.want {
			t.Errorf("rangeHeader(%d, %d) = %q, want %q", tc.offset, tc.length, got, tc.want)
		}
	}
}

func TestPersistedBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{"bytes=0-0", 1, true},
		{"bytes=0-262143", 262144, true},
		{"bytes=0-", 0, false},
		{"bytes=1-5", 0, false},
		{"bytes 0-5", 0, false},
		{"bytes=0--5", 0, false},
		{"bytes=0-+5", 0, false},
		{"bytes=0-5x", 0, false},
		{"bytes=0-99999999999999999999", 0, false},
		{"bytes=0-5497558138880", 0, false}, // 5 TiB + 1 bytes
	} {
		got, ok := persistedBytes(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("persistedBytes(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestHashCRC32C(t *testing.T) {
	crc := crc32c([]byte("pgstow"))
	enc := encodeCRC32C(crc)
	for _, tc := range []struct {
		values []string
		want   uint32
		ok     bool
	}{
		{[]string{"crc32c=" + enc + ",md5=1B2M2Y8AsgTpgAmY7PhCfg=="}, crc, true},
		{[]string{"md5=1B2M2Y8AsgTpgAmY7PhCfg==", "crc32c=" + enc}, crc, true},
		{[]string{"md5=1B2M2Y8AsgTpgAmY7PhCfg==, crc32c=" + enc}, crc, true},
		{[]string{"crc32c=AAAAAA=="}, 0, true},
		{[]string{"md5=1B2M2Y8AsgTpgAmY7PhCfg=="}, 0, false},
		{[]string{"crc32c=AAAA"}, 0, false},
		{[]string{"crc32c=!!!!!!=="}, 0, false},
		{nil, 0, false},
	} {
		got, ok := hashCRC32C(tc.values)
		if got != tc.want || ok != tc.ok {
			t.Errorf("hashCRC32C(%q) = %08x, %v; want %08x, %v", tc.values, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseError(t *testing.T) {
	for _, tc := range []struct {
		code      int
		body      string
		want      string
		class     error
		transient bool
	}{
		{404, `{"error":{"code":404,"message":"No such object: b/k","errors":[{"message":"No such object: b/k","reason":"notFound"}]}}`,
			"404 Not Found: No such object: b/k", providers.ErrNotExist, false},
		{404, `{"error":{"code":404,"message":"The specified bucket does not exist."}}`,
			"404 Not Found: The specified bucket does not exist.", providers.ErrNoBucket, false},
		{404, "<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist.</Message></Error>",
			"404 Not Found: <?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist.</Message></Error>", providers.ErrNoBucket, false},
		{412, `{"error":{"errors":[{"message":"At least one of the pre-conditions you specified did not hold."}]}}`,
			"412 Precondition Failed: At least one of the pre-conditions you specified did not hold.", providers.ErrExist, false},
		{400, `{"error":{"code":400,"message":"Provided CRC32C \"AAAAAQ==\" doesn't match calculated CRC32C \"AAAAAA==\"."}}`,
			`400 Bad Request: Provided CRC32C "AAAAAQ==" doesn't match calculated CRC32C "AAAAAA==".`, providers.ErrChecksum, false},
		{503, "Service Unavailable\n\n", "503 Service Unavailable: Service Unavailable", nil, true},
		{502, "", "502 Bad Gateway", nil, true},
		{403, "line one\r\nline\ttwo\x00", "403 Forbidden: line one line two", providers.ErrAccessDenied, false},
	} {
		err := parseError(tc.code, []byte(tc.body))
		if got := err.Error(); got != tc.want {
			t.Errorf("parseError(%d, %q) = %q, want %q", tc.code, tc.body, got, tc.want)
		}
		class, transient := classify(fmt.Errorf("wrapped: %w", err), providers.ErrNotExist)
		if class != tc.class || transient != tc.transient {
			t.Errorf("classify(parseError(%d, %q)) = %v, %v; want %v, %v", tc.code, tc.body, class, transient, tc.class, tc.transient)
		}
	}
	long := parseError(500, bytes.Repeat([]byte("é"), 1000)).Error()
	if len(long) > maxErrorMessageBytes+40 || !strings.HasSuffix(long, "é…") {
		t.Errorf("a long message is not shortened at a character: %d bytes, ends %q", len(long), long[len(long)-10:])
	}
}

// partialServer stands in for GCS where fake-gcs-server cannot: it keeps
// only part of each chunk but the last of a resumable upload (GCS may do
// so), checks the CRC32C an upload declares as GCS does, and declares a
// CRC32C of the test's choosing for downloads.
type partialServer struct {
	*httptest.Server
	// shortBy is how many bytes of each chunk but the last it drops.
	shortBy int

	mu       sync.Mutex
	data     []byte
	chunks   int
	declared []string // the CRC32C each upload declared
	hash     string   // X-Goog-Hash of downloads
	noRanges bool     // answer ranged downloads with the whole object
	refuse   int      // answer uploads with this status at once
}

func newPartialServer(t *testing.T, shortBy int) *partialServer {
	p := &partialServer{shortBy: shortBy}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.Close)
	return p
}

func (p *partialServer) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fail := func(code int, format string, args ...any) {
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":%q}}`, code, fmt.Sprintf(format, args...))
	}
	created := func() {
		crc := crc32c(p.data)
		if len(p.declared) == 0 || p.declared[len(p.declared)-1] != encodeCRC32C(crc) {
			fail(400, "Provided CRC32C %q doesn't match calculated CRC32C %q", p.declared, encodeCRC32C(crc))
			return
		}
		fmt.Fprintf(w, `{"name":"k","size":"%d","crc32c":%q}`, len(p.data), encodeCRC32C(crc))
	}
	q := r.URL.Query()
	if p.refuse != 0 && (r.Method == http.MethodPut || r.Method == http.MethodPost && q.Get("uploadType") == "multipart") {
		fail(p.refuse, "refused before reading the body")
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/storage/v1/b/test-bucket/o":
		fmt.Fprint(w, `{}`)
	case r.Method == http.MethodGet && q.Get("alt") == "media":
		w.Header().Set("X-Goog-Hash", p.hash)
		if rng := r.Header.Get("Range"); rng != "" && !p.noRanges {
			var from, to int
			fmt.Sscanf(rng, "bytes=%d-%d", &from, &to)
			w.WriteHeader(http.StatusPartialContent)
			w.Write(p.data[from : to+1])
			return
		}
		w.Write(p.data)
	case r.Method == http.MethodPost && q.Get("uploadType") == "multipart":
		_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		mr := multipart.NewReader(r.Body, params["boundary"])
		var meta objectMetadata
		part, err := mr.NextPart()
		if err == nil {
			err = json.NewDecoder(part).Decode(&meta)
		}
		if err == nil {
			part, err = mr.NextPart()
		}
		if err == nil {
			p.data, err = io.ReadAll(part)
		}
		if err != nil {
			fail(400, "multipart: %v", err)
			return
		}
		p.declared = append(p.declared, meta.CRC32C)
		created()
	case r.Method == http.MethodPost && q.Get("uploadType") == "resumable":
		p.data = p.data[:0]
		w.Header().Set("Location", p.URL+"/session?upload_id=1")
	case r.Method == http.MethodPut && r.URL.Path == "/session":
		p.chunks++
		var from, to, total int
		if _, err := fmt.Sscanf(r.Header.Get("Content-Range"), "bytes %d-%d/%d", &from, &to, &total); err != nil || from != len(p.data) {
			fail(400, "chunk %q does not continue at %d", r.Header.Get("Content-Range"), len(p.data))
			return
		}
		// Read into data's spare capacity, so that a test can count
		// the client's allocations.
		n := to - from + 1
		p.data = slices.Grow(p.data, n)
		if _, err := io.ReadFull(r.Body, p.data[from:from+n]); err != nil {
			fail(400, "chunk body: %v", err)
			return
		}
		if to+1 < total {
			n -= p.shortBy
		}
		p.data = p.data[:from+n]
		if len(p.data) < total {
			w.Header().Set("Range", "bytes=0-"+strconv.Itoa(len(p.data)-1))
			w.Header().Set("X-Http-Status-Code-Override", "308")
			return
		}
		hash, _ := strings.CutPrefix(r.Header.Get("X-Goog-Hash"), "crc32c=")
		p.declared = append(p.declared, hash)
		created()
	default:
		fail(400, "unexpected %s %s", r.Method, r.URL)
	}
}

// TestPartialChunks checks resumable uploads where GCS keeps only part of
// a chunk: Put seeks the body back and goes on where GCS says, with the
// CRC32C up to there, and declares the right CRC32C with the last chunk,
// computed if the caller gave none.
func TestPartialChunks(t *testing.T) {
	srv := newPartialServer(t, 1000)
	s := openOn(t, srv.URL, "test-bucket", "")
	// Three chunks' worth: the bytes dropped from the first three make
	// a fourth.
	data := bytes.Repeat([]byte("0123456789abcdef"), 3*chunkUnitBytes/16)
	for _, opts := range []providers.PutOptions{{}, {CRC32C: crc32c(data), HasCRC32C: true}} {
		srv.chunks = 0
		if err := s.Put(t.Context(), "k", bytes.NewReader(data), int64(len(data)), opts); err != nil {
			t.Fatalf("Put (%+v): %v", opts, err)
		}
		if !bytes.Equal(srv.data, data) {
			t.Fatalf("Put (%+v) stored %d bytes, not the %d given", opts, len(srv.data), len(data))
		}
		if srv.chunks != 4 {
			t.Errorf("Put (%+v) sent %d chunks, want 4 (3 and one of the dropped bytes)", opts, srv.chunks)
		}
	}
	// Single requests declare a CRC32C too, computed if need be.
	small := data[:1000]
	if err := s.Put(t.Context(), "k", bytes.NewReader(small), int64(len(small)), providers.PutOptions{}); err != nil {
		t.Fatalf("single-request Put: %v", err)
	}
	if got, want := srv.declared[len(srv.declared)-1], encodeCRC32C(crc32c(small)); got != want {
		t.Errorf("single-request Put declared CRC32C %q, want %q", got, want)
	}
}

// TestDownloadChecksum checks that a read of a whole object fails, as a
// transient ErrChecksum, where the bytes do not have the CRC32C GCS
// declares for them, and that a ranged read is not checked.
func TestDownloadChecksum(t *testing.T) {
	srv := newPartialServer(t, 0)
	s := openOn(t, srv.URL, "test-bucket", "")
	srv.data = []byte("pgstow object")
	for _, tc := range []struct {
		hash           string
		offset, length int64
		wantErr        bool
	}{
		{"crc32c=" + encodeCRC32C(crc32c(srv.data)) + ",md5=x", 0, -1, false},
		{"crc32c=" + encodeCRC32C(crc32c(srv.data)^1) + ",md5=x", 0, -1, true},
		{"md5=x", 0, -1, false},
		{"crc32c=" + encodeCRC32C(crc32c(srv.data)^1), 2, 3, false},
	} {
		srv.hash = tc.hash
		rc, err := s.Get(t.Context(), "k", tc.offset, tc.length)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(rc)
		rc.Close()
		if !tc.wantErr {
			if err != nil {
				t.Errorf("Get(%d, %d) declared %q: %v", tc.offset, tc.length, tc.hash, err)
			}
			continue
		}
		if !errors.Is(err, providers.ErrChecksum) || !errors.Is(err, providers.ErrTransient) {
			t.Errorf("Get of an object declared %q = %v, want a transient ErrChecksum", tc.hash, err)
		}
	}
}

// TestRangeIgnored checks ranged reads where the answer is the whole
// object, as from a proxy that drops the Range header.
func TestRangeIgnored(t *testing.T) {
	srv := newPartialServer(t, 0)
	srv.noRanges = true
	s := openOn(t, srv.URL, "test-bucket", "")
	srv.data = []byte("0123456789")
	for _, tc := range []struct {
		offset, length int64
		want           string
	}{
		{0, 3, "012"},
		{4, 3, "456"},
		{8, -1, "89"},
		{8, 5, "89"},
		{10, 1, ""},
		{20, -1, ""},
	} {
		rc, err := s.Get(t.Context(), "k", tc.offset, tc.length)
		if err != nil {
			t.Fatalf("Get(%d, %d): %v", tc.offset, tc.length, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(got) != tc.want {
			t.Errorf("Get(%d, %d) = %q, %v; want %q", tc.offset, tc.length, got, err, tc.want)
		}
	}
}

// TestEarlyAnswer checks that Put returns only once the HTTP transport
// has stopped reading the body, where the server answers before it has
// read the body: callers reuse their buffers as soon as Put returns (the
// race detector sees it if Put did not wait).
func TestEarlyAnswer(t *testing.T) {
	srv := newPartialServer(t, 0)
	srv.refuse = http.StatusPreconditionFailed
	s, err := Open(t.Context(), Config{Bucket: "test-bucket", Endpoint: srv.URL, ChunkSize: 4 << 20, MultipartThreshold: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, size := range []int{6 << 20, 12 << 20} { // one request; a resumable upload
		data := make([]byte, size)
		err := s.Put(t.Context(), "k", bytes.NewReader(data), int64(size), providers.PutOptions{IfAbsent: true})
		if !errors.Is(err, providers.ErrExist) {
			t.Errorf("Put of %d bytes answered 412 = %v, want ErrExist", size, err)
		}
		for i := range data {
			data[i] = 1
		}
	}
}

// TestPutMemory checks Config's memory promise: a resumable upload streams
// its chunks rather than buffering them, so a Put of 32 MiB in 8 MiB
// chunks allocates far less than one chunk.
func TestPutMemory(t *testing.T) {
	srv := newPartialServer(t, 0)
	s, err := Open(t.Context(), Config{Bucket: "test-bucket", Endpoint: srv.URL, ChunkSize: 8 << 20, MultipartThreshold: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, 32<<20)
	srv.data = make([]byte, 0, len(data))
	put := func() {
		if err := s.Put(t.Context(), "k", bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put() // warm the buffer pool and the connection
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	put()
	runtime.ReadMemStats(&after)
	// The server, in this process too, reads into memory it has.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("a Put of 32 MiB in 8 MiB chunks allocated %d KiB", alloc>>10)
	if alloc > 1<<20 {
		t.Errorf("a Put of 32 MiB in 8 MiB chunks allocated %d KiB", alloc>>10)
	}
}
