package repository

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/pierrec/lz4/v4"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/uploader"
)

// cutStore hands out object bodies that fail after half their bytes with
// the error the retry layer gives up with on a flaky link.
type cutStore struct {
	providers.Store
	err error
}

func (s cutStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	data, err := providers.ReadAll(ctx, s.Store, key)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(io.MultiReader(bytes.NewReader(data[:len(data)/2]), iotestErr{s.err})), nil
}

type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }

// otherFrame encodes raw as another encoder might: pure-Go LZ4 at another
// level, with block checksums, so the frame has another size.
func otherFrame(t *testing.T, raw []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := lz4.NewWriter(&out)
	if err := w.Apply(lz4.BlockChecksumOption(true), lz4.ChecksumOption(true), lz4.CompressionLevelOption(lz4.Level9)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// DownloadChunk reads an object whatever its size up to what any frame
// of the chunk can take, leaves content to DecodeChunk, and never calls a
// failed read corrupt.
func TestDownloadChunk(t *testing.T) {
	raw := bytes.Repeat([]byte("pgstow reads any frame "), 5000)
	for _, tc := range []struct {
		name string
		// stored returns the object's bytes given the recorded frame.
		stored  func(frame []byte) []byte
		readErr error // the body fails halfway with it
		// want: nil, or the sentinel the download or decode must match.
		want    error
		corrupt bool
	}{
		{name: "as recorded", stored: bytes.Clone},
		{name: "another encoder's frame, another size", stored: func([]byte) []byte { return otherFrame(t, raw) }},
		{name: "truncated", stored: func(f []byte) []byte { return f[:len(f)-9] }, corrupt: true},
		{name: "longer than any frame", stored: func(f []byte) []byte {
			return append(bytes.Clone(f), make([]byte, chunker.CompressBound(len(raw))+1024)...)
		}, corrupt: true},
		{name: "link cut, retries exhausted", stored: bytes.Clone,
			readErr: providers.MarkTransient(io.ErrUnexpectedEOF), want: providers.ErrTransient},
		{name: "link cut", stored: bytes.Clone, readErr: io.ErrUnexpectedEOF, want: io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			store := mem.New()
			frame, crc, err := chunker.NewCompressor().Append(nil, raw)
			if err != nil {
				t.Fatal(err)
			}
			ref := manifest.ChunkRef{ID: chunker.ID(raw), RawSize: int64(len(raw)), StoredSize: int64(len(frame)), StoredCRC32C: &crc}
			data := tc.stored(frame)
			if err := store.Put(ctx, ChunkKey(ref.ID), bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			r := New(store)
			if tc.readErr != nil {
				r = New(cutStore{Store: store, err: tc.readErr})
			}
			buf := make([]byte, 0, 16) // too small: grown
			var out bytes.Buffer
			got, err := r.DownloadChunk(ctx, ref, &buf)
			if err == nil {
				err = r.DecodeChunk(chunker.NewDecompressor(), ref, got, &out)
			}
			switch {
			case tc.corrupt:
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("got %v; want ErrCorrupt", err)
				}
			case tc.want != nil:
				if !errors.Is(err, tc.want) || errors.Is(err, ErrCorrupt) {
					t.Fatalf("got %v; want %v and not ErrCorrupt", err, tc.want)
				}
			case err != nil:
				t.Fatal(err)
			case !bytes.Equal(out.Bytes(), raw):
				t.Fatal("decoded content differs")
			case !bytes.Equal(got, data):
				t.Fatal("downloaded bytes differ from the object")
			case (CheckStoredCRC(ref, got) == nil) != bytes.Equal(data, frame):
				t.Fatalf("CheckStoredCRC: %v, for bytes equal to those recorded: %v", CheckStoredCRC(ref, got), bytes.Equal(data, frame))
			}
		})
	}
}

// The uploader stores chunks through the repository.
var _ uploader.Repository = (*Repository)(nil)

// PutChunk stores a frame once, under the key restore reads, sealed in an
// encrypted repository; HasChunk reports it with its stored size, and a
// failure of the store is an error, not "absent".
func TestPutAndHasChunk(t *testing.T) {
	key, err := encryption.ParseKey([]byte(strings.Repeat("cd", 32)))
	if err != nil {
		t.Fatal(err)
	}
	raw := bytes.Repeat([]byte("one chunk, stored once "), 3000)
	for _, tc := range []struct {
		name string
		open func(providers.Store) *Repository
	}{
		{"plain", New},
		{"encrypted", func(s providers.Store) *Repository { return NewEncrypted(s, key) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			store := mem.New()
			r := tc.open(store)
			id := r.ChunkID(raw)
			frame, crc, err := chunker.NewCompressor().Append(nil, raw)
			if err != nil {
				t.Fatal(err)
			}
			if _, found, err := r.HasChunk(ctx, id); err != nil || found {
				t.Fatalf("before the put: found %v, err %v", found, err)
			}
			for i, want := range []bool{true, false} {
				stored, err := r.PutChunk(ctx, id, frame, crc)
				if err != nil || stored != want {
					t.Fatalf("put %d: stored %v, err %v; want %v", i+1, stored, err, want)
				}
			}
			size, found, err := r.HasChunk(ctx, id)
			if err != nil || !found {
				t.Fatalf("after the put: found %v, err %v", found, err)
			}
			// The size of the frame, what manifests record, under a seal or not.
			if size != int64(len(frame)) {
				t.Fatalf("HasChunk says %d bytes, the frame has %d", size, len(frame))
			}
			if obj, err := store.Stat(ctx, ChunkKey(id)); err != nil || (obj.Size == size) != (r.key == nil) {
				t.Fatalf("HasChunk says %d bytes; the object: %+v, %v", size, obj, err)
			}
			ref := manifest.ChunkRef{ID: id, RawSize: int64(len(raw)), StoredSize: int64(len(frame))}
			var buf []byte
			var out bytes.Buffer
			got, err := r.DownloadChunk(ctx, ref, &buf)
			if err == nil {
				err = r.DecodeChunk(chunker.NewDecompressor(), ref, got, &out)
			}
			if err != nil || !bytes.Equal(out.Bytes(), raw) {
				t.Fatalf("read back: %v", err)
			}

			broken := New(failingStat{store})
			if _, _, err := broken.HasChunk(ctx, id); !errors.Is(err, errStat) {
				t.Fatalf("HasChunk over a failing store: %v, want the store's error", err)
			}
		})
	}
}

var errStat = errors.New("stat failed")

// failingStat fails every Stat.
type failingStat struct{ providers.Store }

func (failingStat) Stat(context.Context, string) (providers.ObjectInfo, error) {
	return providers.ObjectInfo{}, errStat
}
