package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
)

// walLike is a segment-like byte string: records, then zeros.
func walLike(n, records int) []byte {
	b := make([]byte, n)
	for i := range min(records, n) {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// openFDs counts this process's open file descriptors (Linux; -1
// elsewhere), to catch spool files that are never closed.
func openFDs(t *testing.T) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		return -1
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestPutWALFrom: a streamed WAL file is stored as the one LZ4 frame
// Compress makes of it (the format is unchanged), under the same key,
// with the SHA-256 of its raw bytes; it reads back whole; and the spool
// leaves neither files nor descriptors behind.
func TestPutWALFrom(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		src  func([]byte) io.Reader
	}{
		{"history file", []byte("1\t0/3000000\tno recovery target specified\n"), nil},
		{"empty", nil, nil},
		{"segment", walLike(seg, 3<<20), nil},
		{"segment read a little at a time", walLike(seg, 5<<20+3), func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) }},
		{"segment from a file section", walLike(seg, 1<<20), func(b []byte) io.Reader { return io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b))) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := mem.New()
			r := New(store)
			spoolDir := t.TempDir()
			r.SetSpoolDir(spoolDir)
			ctx := t.Context()
			name := "000000010000000000000003"
			var src io.Reader = bytes.NewReader(tc.data)
			if tc.src != nil {
				src = tc.src(tc.data)
			}
			fds := openFDs(t)
			got, err := r.PutWALFrom(ctx, chunker.NewCompressor(), name, src, int64(len(tc.data)))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(tc.data)
			var frame bytes.Buffer
			if _, err := chunker.NewCompressor().Compress(&frame, tc.data); err != nil {
				t.Fatal(err)
			}
			want := manifest.WALSegment{Name: name, SHA256: hex.EncodeToString(sum[:]), StoredSize: int64(frame.Len())}
			if got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
			stored, err := providers.ReadAll(ctx, store, WALKey(name))
			if err != nil || !bytes.Equal(stored, frame.Bytes()) {
				t.Fatalf("the stored object is not Compress's frame (%v)", err)
			}
			var back bytes.Buffer
			n, size, err := r.fetchWALTo(ctx, chunker.NewDecompressor(), name, &back, int64(len(tc.data)))
			if err != nil || n != int64(len(tc.data)) || size != want.StoredSize || !bytes.Equal(back.Bytes(), tc.data) {
				t.Fatalf("FetchWALTo: %d raw, %d stored, %v", n, size, err)
			}
			if entries, _ := os.ReadDir(spoolDir); len(entries) != 0 {
				t.Fatalf("spool files left behind: %v", entries)
			}
			if after := openFDs(t); after != fds {
				t.Fatalf("%d open files before, %d after", fds, after)
			}
		})
	}
}

// TestPutWALFromFailures: every failure leaves no object, no spool file
// and no open descriptor, and says what went wrong.
func TestPutWALFromFailures(t *testing.T) {
	data := walLike(1<<20, 1000)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	errRead := errors.New("read failed")
	tests := []struct {
		name     string
		ctx      context.Context
		spoolDir func(t *testing.T) string
		src      io.Reader
		size     int64
		want     error
		wantText string
	}{
		{name: "source too short", src: bytes.NewReader(data[:1000]), size: int64(len(data)), want: io.ErrUnexpectedEOF},
		{name: "source fails", src: io.MultiReader(bytes.NewReader(data[:5000]), iotest.ErrReader(errRead)), size: int64(len(data)), want: errRead},
		{name: "cancelled", ctx: cancelled, src: bytes.NewReader(data), size: int64(len(data)), want: context.Canceled},
		{
			name:     "no spool directory",
			spoolDir: func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") },
			src:      bytes.NewReader(data), size: int64(len(data)),
			want: fs.ErrNotExist, wantText: "PGSTOW_SPOOL_DIR",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := mem.New()
			r := New(store)
			spoolDir := t.TempDir()
			if tc.spoolDir != nil {
				spoolDir = tc.spoolDir(t)
			}
			r.SetSpoolDir(spoolDir)
			ctx := tc.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			name := "000000010000000000000003"
			fds := openFDs(t)
			_, err := r.PutWALFrom(ctx, chunker.NewCompressor(), name, tc.src, tc.size)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantText) || !strings.Contains(err.Error(), name) {
				t.Fatalf("got %v, want %v saying %q and naming %s", err, tc.want, tc.wantText, name)
			}
			if ok, _ := r.HasWAL(t.Context(), name); ok {
				t.Fatal("an object was stored")
			}
			if entries, _ := os.ReadDir(spoolDir); len(entries) != 0 {
				t.Fatalf("spool files left behind: %v", entries)
			}
			if after := openFDs(t); after != fds {
				t.Fatalf("%d open files before, %d after", fds, after)
			}
		})
	}
}

// TestPutWALFromExisting: the same content under an existing name is
// fine, other content is refused, both decided by streaming the stored
// copy through SHA-256; the stored copy stays.
func TestPutWALFromExisting(t *testing.T) {
	r := New(mem.New())
	r.SetSpoolDir(t.TempDir())
	ctx := t.Context()
	comp := chunker.NewCompressor()
	name := "000000010000000000000003"
	data := walLike(seg, 2<<20)
	first, err := r.PutWALFrom(ctx, comp, name, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		data     []byte
		conflict bool
	}{
		{"identical", data, false},
		{"one bit differs", func() []byte { b := bytes.Clone(data); b[len(b)-1] ^= 1; return b }(), true},
		{"shorter", data[:len(data)-1], true},
		{"longer", append(bytes.Clone(data), 0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.PutWALFrom(ctx, comp, name, bytes.NewReader(tc.data), int64(len(tc.data)))
			if tc.conflict {
				if !errors.Is(err, ErrWALConflict) {
					t.Fatalf("got %v, want ErrWALConflict", err)
				}
			} else if err != nil || got != first {
				t.Fatalf("got %+v, %v; want %+v", got, err, first)
			}
			sum, err := r.WALSum(ctx, chunker.NewDecompressor(), name)
			if err != nil || sum.Hex() != first.SHA256 || sum.RawSize != int64(len(data)) || sum.StoredSize != first.StoredSize {
				t.Fatalf("the stored copy changed: %+v %v", sum, err)
			}
		})
	}
}

// failingWriter fails every write.
type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

// TestFetchWALTo: what each failure wraps, so callers can tell a missing
// file (the end of the archive) from a corrupt one and from a failing
// destination.
func TestFetchWALTo(t *testing.T) {
	store := mem.New()
	r := New(store)
	r.SetSpoolDir(t.TempDir())
	ctx := t.Context()
	comp := chunker.NewCompressor()
	data := walLike(1<<20, 5000)
	put := func(name string, b []byte) {
		t.Helper()
		if _, err := r.PutWAL(ctx, comp, name, b); err != nil {
			t.Fatal(err)
		}
	}
	put("000000010000000000000003", data)
	put("000000010000000000000004", data)
	store.Corrupt(WALKey("000000010000000000000004"), 30)
	// A WAL file an old pgstow stored: Compress's frame, put as is.
	var old bytes.Buffer
	crc, _ := comp.Compress(&old, data)
	if err := store.Put(ctx, WALKey("000000010000000000000005"), bytes.NewReader(old.Bytes()), int64(old.Len()),
		providers.PutOptions{IfAbsent: true, CRC32C: crc, HasCRC32C: true}); err != nil {
		t.Fatal(err)
	}
	// Not pgstow's: an LZ4 frame a little too large for its raw size.
	var padded bytes.Buffer
	padded.Write(old.Bytes())
	padded.Write(make([]byte, chunker.CompressBound(len(data))))
	store.Put(ctx, WALKey("000000010000000000000006"), bytes.NewReader(padded.Bytes()), int64(padded.Len()), providers.PutOptions{})
	errDisk := errors.New("no space left on device")
	tests := []struct {
		name             string
		file             string
		dst              io.Writer
		maxRaw           int64
		corrupt, missing bool
		wantErr          error
	}{
		{name: "ok", file: "000000010000000000000003", maxRaw: int64(len(data))},
		{name: "stored by an earlier pgstow", file: "000000010000000000000005", maxRaw: int64(len(data))},
		{name: "no limit", file: "000000010000000000000003", maxRaw: -1},
		{name: "larger than the limit", file: "000000010000000000000003", maxRaw: int64(len(data)) - 1, corrupt: true},
		{name: "stored object too large", file: "000000010000000000000006", maxRaw: int64(len(data)), corrupt: true},
		{name: "corrupt", file: "000000010000000000000004", maxRaw: -1, corrupt: true},
		{name: "missing", file: "000000010000000000000009", maxRaw: -1, missing: true},
		{name: "destination fails", file: "000000010000000000000003", dst: failingWriter{errDisk}, maxRaw: -1, wantErr: errDisk},
	}
	dec := chunker.NewDecompressor()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			dst := tc.dst
			if dst == nil {
				dst = &out
			}
			n, _, err := r.fetchWALTo(ctx, dec, tc.file, dst, tc.maxRaw)
			switch {
			case tc.corrupt || tc.missing || tc.wantErr != nil:
				if errors.Is(err, ErrCorrupt) != tc.corrupt || errors.Is(err, providers.ErrNotExist) != tc.missing ||
					(tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.file) {
					t.Fatalf("got %v; want corrupt %v, missing %v, %v", err, tc.corrupt, tc.missing, tc.wantErr)
				}
			case err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data):
				t.Fatalf("got %d bytes, %v", n, err)
			}
		})
	}
}

// TestReadWAL: the one trust rule for reading WAL, with 1 MiB segments.
func TestReadWAL(t *testing.T) {
	const segSize = 1 << 20
	store := mem.New()
	r := New(store)
	r.SetSpoolDir(t.TempDir())
	ctx := t.Context()
	comp := chunker.NewCompressor()
	segment := walLike(segSize, 5000)
	history := []byte("1\t0/3000000\tno recovery target specified\n")
	for name, data := range map[string][]byte{
		"000000010000000000000003":                  segment,
		"000000010000000000000004":                  segment[:segSize-1], // short
		"000000010000000000000005.00000100.partial": segment[:0x100],
		"000000010000000000000006.00000100.partial": segment[:0xff], // shorter than its name says
		"000000010000000000000007.partial":          segment[:1234], // wal-receive's: any length
		"00000002.history":                          history,
		"000000010000000000000008":                  walLike(2*segSize, 5000), // longer than a segment
	} {
		if _, err := r.PutWAL(ctx, comp, name, data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.PutWAL(ctx, comp, "000000010000000000000009", segment); err != nil {
		t.Fatal(err)
	}
	store.Corrupt(WALKey("000000010000000000000009"), 30)
	sum := sha256.Sum256(segment)
	good := hex.EncodeToString(sum[:])
	tests := []struct {
		name, file, sha string
		dst             bool
		wantErr         error
		wantRaw         int
	}{
		{name: "segment", file: "000000010000000000000003", dst: true, wantRaw: segSize},
		{name: "segment, checked only", file: "000000010000000000000003", wantRaw: segSize},
		{name: "recorded SHA-256", file: "000000010000000000000003", sha: good, dst: true, wantRaw: segSize},
		{name: "other SHA-256", file: "000000010000000000000003", sha: strings.Repeat("0", 64), wantErr: ErrCorrupt},
		{name: "short segment", file: "000000010000000000000004", wantErr: ErrCorrupt},
		{name: "standby partial", file: "000000010000000000000005.00000100.partial", dst: true, wantRaw: 0x100},
		{name: "standby partial shorter than its name", file: "000000010000000000000006.00000100.partial", wantErr: ErrCorrupt},
		{name: "receiver's partial", file: "000000010000000000000007.partial", dst: true, wantRaw: 1234},
		{name: "history", file: "00000002.history", dst: true, wantRaw: len(history)},
		{name: "larger than a segment", file: "000000010000000000000008", wantErr: ErrCorrupt},
		{name: "damaged frame", file: "000000010000000000000009", wantErr: ErrCorrupt},
		{name: "missing", file: "00000001000000000000000A", wantErr: providers.ErrNotExist},
		{name: "invalid name", file: "../pgstow.json", wantErr: ErrWALName},
		{name: "lower-case name", file: "00000001000000000000000a", wantErr: ErrWALName},
	}
	dec := chunker.NewDecompressor()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			var dst io.Writer
			if tc.dst {
				dst = &out
			}
			got, err := r.ReadWAL(ctx, dec, tc.file, WALWant{SegmentSize: segSize, SHA256: tc.sha}, dst)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.file) {
					t.Fatalf("got %v, want %v naming %s", err, tc.wantErr, tc.file)
				}
				return
			}
			if err != nil || got.RawSize != int64(tc.wantRaw) || got.StoredSize <= 0 {
				t.Fatalf("got %+v, %v", got, err)
			}
			if tc.dst && out.Len() != tc.wantRaw {
				t.Errorf("wrote %d bytes, want %d", out.Len(), tc.wantRaw)
			}
		})
	}
	if _, err := r.ReadWAL(ctx, dec, "000000010000000000000003", WALWant{}, nil); err == nil {
		t.Error("read without a segment size")
	}
}
