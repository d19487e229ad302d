//go:build lz4cgo && cgo

package chunker

import (
	"bytes"
	"testing"
)

// TestFramesMatchLZ4F: the frames cEncoder writes itself, whole and
// streamed, are byte for byte those of liblz4's frame API with pgstow's
// preferences, for inputs that compress, that do not, and that end on,
// before and after a block boundary.
func TestFramesMatchLZ4F(t *testing.T) {
	mixed := append(content(3, lz4BlockSize/2), make([]byte, lz4BlockSize)...)
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"one byte", []byte("x")},
		{"one incompressible byte", content(1, 1)},
		{"text", bytes.Repeat([]byte("pgstow "), 1000)},
		{"table pages, a block and a bit", tableData(1, lz4BlockSize+1000)},
		{"exactly one block", tableData(2, lz4BlockSize)},
		{"a block less one, incompressible", content(2, lz4BlockSize-1)},
		{"two blocks, incompressible", content(4, 2*lz4BlockSize)},
		{"zeros", make([]byte, 2*lz4BlockSize+7)},
		{"incompressible then zeros", mixed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := newFrameEncoder()
			if err != nil {
				t.Fatal(err)
			}
			e := enc.(*cEncoder)
			want, err := lz4fFrame(tc.raw)
			if err != nil {
				t.Fatalf("LZ4F: %v", err)
			}
			got, err := e.appendFrame(make([]byte, 3, 3+CompressBound(len(tc.raw))), tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[3:], want) {
				t.Fatalf("appendFrame: %d bytes, LZ4F %d; first difference at %d", len(got)-3, len(want), firstDiff(got[3:], want))
			}
			var streamed bytes.Buffer
			if err := e.writeFrame(&streamed, bytes.NewReader(tc.raw), int64(len(tc.raw))); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(streamed.Bytes(), want) {
				t.Fatalf("writeFrame: %d bytes, LZ4F %d; first difference at %d", streamed.Len(), len(want), firstDiff(streamed.Bytes(), want))
			}
		})
	}
}

// appendFrame refuses a buffer without room for the largest frame rather
// than let append swap a pooled buffer for a new one.
func TestAppendFrameNeedsRoom(t *testing.T) {
	enc, err := newFrameEncoder()
	if err != nil {
		t.Fatal(err)
	}
	raw := content(5, 1000)
	if _, err := enc.appendFrame(make([]byte, 0, CompressBound(len(raw))-1), raw); err == nil {
		t.Fatal("a buffer one byte short was accepted")
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
