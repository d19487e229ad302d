package file

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// alignedBuf returns n bytes of pattern starting on a 4096-byte boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) % directAlign)
	if off != 0 {
		off = directAlign - off
	}
	b = b[off : off+n]
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

// directSupported reports whether dir's file system takes O_DIRECT writes.
func directSupported(t *testing.T, dir string) bool {
	fd, err := unix.Open(filepath.Join(dir, "probe"), unix.O_CREAT|unix.O_WRONLY|unix.O_DIRECT, 0o600)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, alignedBuf(directAlign))
	return err == nil
}

// TestDirectWriter writes sequences of aligned and unaligned buffers: the
// file always holds exactly what was written, and where the file system
// takes O_DIRECT, the aligned bulk of each aligned write at an aligned
// offset went that way.
func TestDirectWriter(t *testing.T) {
	big := alignedBuf(3<<20 + 12345)
	for _, tc := range []struct {
		name       string
		writes     [][]byte
		wantDirect int64
	}{
		{"aligned with a tail", [][]byte{big}, 3<<20 + 12288},
		{"aligned, exact", [][]byte{big[:1<<20]}, 1 << 20},
		{"two aligned", [][]byte{big[:1<<20], big[1<<20 : 2<<20]}, 2 << 20},
		{"unaligned buffer", [][]byte{big[1 : 1<<20+1]}, 0},
		{"unaligned offset after a tail", [][]byte{big[:100], big[:1<<20]}, 0},
		{"aligned, then a tail, then unaligned offset", [][]byte{big[:1<<20+5], big[:1<<20]}, 1 << 20},
		{"small", [][]byte{big[:directMin-directAlign]}, 0},
		{"empty", [][]byte{nil}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f, err := os.Create(filepath.Join(dir, "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			w := &directWriter{f: f}
			var want []byte
			for _, p := range tc.writes {
				n, err := w.Write(p)
				if err != nil || n != len(p) {
					t.Fatalf("Write %d bytes: %d, %v", len(p), n, err)
				}
				want = append(want, p...)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("file holds %d bytes, want %d (or other bytes)", len(got), len(want))
			}
			if !directSupported(t, dir) {
				t.Logf("%s does not take O_DIRECT: %d bytes went direct", dir, w.direct)
				return
			}
			if w.direct != tc.wantDirect {
				t.Errorf("%d bytes went direct, want %d", w.direct, tc.wantDirect)
			}
		})
	}
}
