package repository

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
)

// listingStore holds one object of every kind the layout knows, and a
// stray one under each prefix that the listings must leave out.
func listingStore(t *testing.T) *mem.Store {
	t.Helper()
	s := mem.New()
	for _, key := range []string{
		RepoKey,
		ChunkKey(testChunkID),
		ChunksPrefix + "README",
		ChunksPrefix + "3f/" + strings.ToUpper(testChunkID),
		WALKey("000000010000000000000003"),
		WALKey("000000010000000000000004.partial"),
		WALKey("00000002.history"),
		WALPrefix + "00000001/notes.txt",
		BackupManifestKey("20260101T000000Z"),
		PGManifestKey("20260101T000000Z"),
		PGManifestKey("20260102T000000Z"),
		BackupsPrefix + "README",
		LockKey(LockBackup, "0123456789abcdef"),
	} {
		body := []byte(key) // sizes tell the objects apart
		if err := s.Put(t.Context(), key, bytes.NewReader(body), int64(len(body)), providers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func collect[T any](t *testing.T, seq iter.Seq2[T, error], name func(T) string) []string {
	t.Helper()
	var out []string
	for v, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, name(v))
	}
	return out
}

func TestListings(t *testing.T) {
	r := New(listingStore(t))
	ctx := t.Context()
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"WAL files", collect(t, r.WALFiles(ctx), func(w WALFile) string { return w.Name + " " + w.Key }), []string{
			"000000010000000000000003 " + WALKey("000000010000000000000003"),
			"000000010000000000000004.partial " + WALKey("000000010000000000000004.partial"),
			"00000002.history " + WALKey("00000002.history"),
		}},
		{"chunks", collect(t, r.ChunkFiles(ctx), func(c ChunkFile) string { return c.ID.String() + " " + c.Key }), []string{
			testChunkID + " " + ChunkKey(testChunkID),
		}},
		{"all backups' objects", collect(t, r.BackupObjects(ctx), func(o BackupObject) string {
			return o.BackupID + " " + o.Key + " " + map[bool]string{true: "manifest", false: "-"}[o.Manifest]
		}), []string{
			"20260101T000000Z " + PGManifestKey("20260101T000000Z") + " -",
			"20260101T000000Z " + BackupManifestKey("20260101T000000Z") + " manifest",
			"20260102T000000Z " + PGManifestKey("20260102T000000Z") + " -",
		}},
		{"one backup's objects", collect(t, r.ObjectsOfBackup(ctx, "20260102T000000Z"), func(o BackupObject) string { return o.Key }), []string{
			PGManifestKey("20260102T000000Z"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	for w, err := range r.WALFiles(ctx) {
		if err != nil || w.Size != int64(len(w.Key)) || w.ModTime.IsZero() {
			t.Errorf("%s: size %d, time %v, %v", w.Key, w.Size, w.ModTime, err)
		}
	}
}

func TestListingFails(t *testing.T) {
	boom := errors.New("boom")
	r := New(&failingList{Store: listingStore(t), err: boom})
	for _, err := range r.WALFiles(t.Context()) {
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "list WAL in") {
			t.Errorf("WALFiles: %v", err)
		}
	}
	n := 0
	for _, err := range r.ChunkFiles(t.Context()) {
		n++
		if !errors.Is(err, boom) {
			t.Errorf("ChunkFiles: %v", err)
		}
	}
	if n != 1 {
		t.Errorf("ChunkFiles went on after an error: %d results", n)
	}
}

// failingList is a store whose listings fail.
type failingList struct {
	providers.Store
	err error
}

func (f *failingList) List(context.Context, string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		if yield(providers.ObjectInfo{}, f.err) {
			yield(providers.ObjectInfo{}, f.err)
		}
	}
}

func TestDeleteObject(t *testing.T) {
	tests := []struct {
		key     string
		deleted bool
		err     error
	}{
		{ChunkKey(testChunkID), true, nil},
		{WALKey("00000002.history"), true, nil},
		{PGManifestKey("20260102T000000Z"), true, nil},
		{LockKey(LockBackup, "0123456789abcdef"), true, nil},
		{RepoKey, false, ErrNotOurs},
		{ChunksPrefix + "README", false, ErrNotOurs},
		{BackupsPrefix + "README", false, ErrNotOurs},
		{WALKey("00000003.history"), false, providers.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			s := listingStore(t)
			r := New(s)
			err := r.DeleteObject(t.Context(), tt.key)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("DeleteObject(%s) = %v, want %v", tt.key, err, tt.err)
			}
			_, serr := s.Stat(t.Context(), tt.key)
			if gone := errors.Is(serr, providers.ErrNotExist); gone != (tt.deleted || tt.err == providers.ErrNotExist) {
				t.Errorf("after DeleteObject(%s): stat %v", tt.key, serr)
			}
		})
	}
}

func TestDeleteChunk(t *testing.T) {
	s := listingStore(t)
	r := New(s)
	size, err := r.DeleteChunk(t.Context(), testChunkID)
	if err != nil || size != int64(len(ChunkKey(testChunkID))) {
		t.Fatalf("DeleteChunk = %d, %v", size, err)
	}
	if _, err := s.Stat(t.Context(), ChunkKey(testChunkID)); !errors.Is(err, providers.ErrNotExist) {
		t.Fatalf("the chunk is still stored: %v", err)
	}
	if _, err := r.DeleteChunk(t.Context(), testChunkID); !errors.Is(err, providers.ErrNotExist) {
		t.Fatalf("DeleteChunk of a missing chunk: %v", err)
	}
}
