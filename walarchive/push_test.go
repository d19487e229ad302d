package walarchive

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
)

func walDir(t *testing.T, ready ...string) string {
	dir := filepath.Join(t.TempDir(), "pg_wal")
	os.MkdirAll(filepath.Join(dir, "archive_status"), 0o700)
	for _, n := range ready {
		os.WriteFile(filepath.Join(dir, n), bytes.Repeat([]byte(n[:8]), 1<<17), 0o600)
		os.WriteFile(filepath.Join(dir, "archive_status", n+".ready"), nil, 0o600)
	}
	return dir
}

func TestPushAheadAndIdempotence(t *testing.T) {
	segs := []string{"000000010000000000000005", "000000010000000000000003", "00000002.history", "000000010000000000000004"}
	dir := walDir(t, segs...)
	os.WriteFile(filepath.Join(dir, "archive_status", "000000010000000000000001.done"), nil, 0o600)
	if got := readyFiles(dir, "000000010000000000000003", 2); !slices.Equal(got, []string{"00000002.history", "000000010000000000000004"}) {
		t.Fatalf("readyFiles = %v", got)
	}
	repo := repository.New(mem.New())
	ctx := t.Context()
	if err := Push(ctx, repo, filepath.Join(dir, "000000010000000000000003"), Options{Ahead: 8}); err != nil {
		t.Fatal(err)
	}
	for _, n := range segs {
		if ok, _ := repo.HasWAL(ctx, n); !ok {
			t.Errorf("%s was not pushed", n)
		}
	}
	// PostgreSQL's later call for a file pushed ahead succeeds.
	if err := Push(ctx, repo, filepath.Join(dir, "000000010000000000000005"), Options{}); err != nil {
		t.Fatal(err)
	}
	// A different file under an archived name fails and changes nothing.
	p := filepath.Join(dir, "000000010000000000000004")
	os.WriteFile(p, []byte("other content"), 0o600)
	err := Push(ctx, repo, p, Options{})
	if !errors.Is(err, repository.ErrWALConflict) {
		t.Fatalf("conflicting push: %v", err)
	}
	// Names PostgreSQL never archives: nonsense, and the partial segment
	// only a standby backup writes.
	for _, n := range []string{"nonsense", "000000010000000000000004.00000028.partial"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600)
		if err := Push(ctx, repo, filepath.Join(dir, n), Options{}); err == nil {
			t.Fatalf("%s was pushed", n)
		}
	}
}

func TestWALEnd(t *testing.T) {
	long := make([]byte, 200<<10) // several of walEnd's blocks
	long[70000] = 1
	for _, tt := range []struct {
		data []byte
		want int64
	}{{nil, 0}, {[]byte{0, 0}, 0}, {[]byte{1, 0, 0}, 1}, {[]byte{0, 2, 0, 3, 0}, 4}, {[]byte{1, 2}, 2}, {long, 70001}, {make([]byte, 200<<10), 0}} {
		got, err := walEnd(io.NewSectionReader(bytes.NewReader(tt.data), 0, int64(len(tt.data))))
		if err != nil || got != tt.want {
			t.Errorf("walEnd(%d bytes) = %d, %v, want %d", len(tt.data), got, err, tt.want)
		}
		// The writer finds the same, however the bytes are split.
		for _, step := range []int{1, 3, 64 << 10} {
			var w walEndWriter
			for b := tt.data; len(b) > 0; b = b[min(step, len(b)):] {
				w.Write(b[:min(step, len(b))])
			}
			if w.end != tt.want {
				t.Errorf("walEndWriter(%d bytes, writes of %d) = %d, want %d", len(tt.data), step, w.end, tt.want)
			}
		}
	}
}
