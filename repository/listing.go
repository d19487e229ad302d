package repository

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/pgstow/pgstow/providers"
)

// Listings and deletions for the catalog commands and the cleanup of a
// failed backup. They hand out parsed names with each object's key, which
// is what reports and messages name; objects under a prefix whose keys do
// not parse are not pgstow's and are never listed, so never deleted.

// Object is a stored object as a listing found it.
type Object struct {
	Key     string // for reports and messages, and for DeleteObject
	Size    int64  // stored size; with encryption the plaintext size
	ModTime time.Time
}

// WALFile is a stored WAL file: a segment, a partial segment or a
// timeline history file.
type WALFile struct {
	Object
	Name string
}

// ChunkFile is a stored chunk.
type ChunkFile struct {
	Object
	ID ChunkID
}

// BackupObject is an object under a backup's directory, committed or not:
// its manifest, PostgreSQL's backup_manifest, or a leftover of a failed
// run.
type BackupObject struct {
	Object
	BackupID string
	// Manifest is set on pgstow's manifest, the backup's commit point.
	Manifest bool
}

// WALFiles lists every stored WAL file, in key order (by timeline, then
// name).
func (r *Repository) WALFiles(ctx context.Context) iter.Seq2[WALFile, error] {
	return listParsed(ctx, r, WALPrefix, "WAL", func(obj providers.ObjectInfo) (WALFile, bool) {
		name, ok := WALNameFromKey(obj.Key)
		return WALFile{Object: object(obj), Name: name}, ok
	})
}

// ChunkFiles lists every stored chunk.
func (r *Repository) ChunkFiles(ctx context.Context) iter.Seq2[ChunkFile, error] {
	return listParsed(ctx, r, ChunksPrefix, "chunks", func(obj providers.ObjectInfo) (ChunkFile, bool) {
		hexID, ok := ChunkIDFromKey(obj.Key)
		if !ok {
			return ChunkFile{}, false
		}
		id, _ := ParseChunkID(hexID)
		return ChunkFile{Object: object(obj), ID: id}, true
	})
}

// BackupObjects lists the objects of every backup, committed or not.
func (r *Repository) BackupObjects(ctx context.Context) iter.Seq2[BackupObject, error] {
	return r.backupObjects(ctx, BackupsPrefix, "backups")
}

// ObjectsOfBackup lists the objects of backup id.
func (r *Repository) ObjectsOfBackup(ctx context.Context, id string) iter.Seq2[BackupObject, error] {
	return r.backupObjects(ctx, BackupsPrefix+id+"/", id)
}

// backupObjects lists the backup objects under prefix; what names them in
// an error.
func (r *Repository) backupObjects(ctx context.Context, prefix, what string) iter.Seq2[BackupObject, error] {
	return listParsed(ctx, r, prefix, what, func(obj providers.ObjectInfo) (BackupObject, bool) {
		id, ok := BackupIDOfKey(obj.Key)
		return BackupObject{Object: object(obj), BackupID: id, Manifest: ok && obj.Key == BackupManifestKey(id)}, ok
	})
}

// listParsed lists the objects under prefix whose keys parse, as parse
// makes them (the others are not pgstow's); what names them in an error.
func listParsed[T any](ctx context.Context, r *Repository, prefix, what string, parse func(providers.ObjectInfo) (T, bool)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		for obj, err := range r.store.List(ctx, prefix) {
			if err != nil {
				var zero T
				yield(zero, fmt.Errorf("list %s in %s: %w", what, r, err))
				return
			}
			if v, ok := parse(obj); ok && !yield(v, nil) {
				return
			}
		}
	}
}

func object(o providers.ObjectInfo) Object {
	return Object{Key: o.Key, Size: o.Size, ModTime: o.ModTime}
}

// ErrNotOurs is returned by DeleteObject for a key outside the layout.
var ErrNotOurs = errors.New("not an object of the repository's layout")

// DeleteObject deletes one object a listing of this repository found,
// or one whose key a layout function built: a chunk, a WAL file, a
// backup's object or a lease. Any other key is refused, so that a caller
// cannot remove what pgstow does not understand. A missing object wraps
// providers.ErrNotExist.
func (r *Repository) DeleteObject(ctx context.Context, key string) error {
	store := r.store
	switch {
	case isChunkKey(key), isWALKey(key), isBackupKey(key):
	case isLockKey(key):
		store = r.raw
	default:
		return fmt.Errorf("delete %s from %s: %w", key, r, ErrNotOurs)
	}
	return store.Delete(ctx, key)
}

// DeleteChunk deletes chunk id and returns the stored size it had; a
// chunk that is not stored wraps providers.ErrNotExist, and one that
// vanishes between the two requests counts as deleted.
func (r *Repository) DeleteChunk(ctx context.Context, id string) (int64, error) {
	key := ChunkKey(id)
	info, err := r.store.Stat(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", key, err)
	}
	if err := r.store.Delete(ctx, key); err != nil && !errors.Is(err, providers.ErrNotExist) {
		return 0, fmt.Errorf("delete %s: %w", key, err)
	}
	return info.Size, nil
}

func isChunkKey(key string) bool  { _, ok := ChunkIDFromKey(key); return ok }
func isWALKey(key string) bool    { _, ok := WALNameFromKey(key); return ok }
func isBackupKey(key string) bool { _, ok := BackupIDOfKey(key); return ok }
func isLockKey(key string) bool   { _, _, ok := LockFromKey(key); return ok }
