package repository

import (
	"strings"

	"github.com/pgstow/pgstow/manifest"
)

// The repository's object keys (docs/repository-format.md). They are built
// only here, and only this package reads or writes objects by them, so the
// layout is defined once and every reader and writer agrees on it. They
// are exported for tests that damage objects on purpose.

// RepoKey is the key of the repository configuration (manifest.Repo).
const RepoKey = "pgstow.json"

// BackupsPrefix is the prefix under which every backup's objects live;
// listing it finds the backups.
const BackupsPrefix = "backups/"

// ChunksPrefix is the prefix of every chunk; WALPrefix of every WAL file;
// LocksPrefix of the leases and locks that keep the catalog commands from
// deleting what a running backup may still commit (docs/catalog.md).
const (
	ChunksPrefix = "chunks/"
	WALPrefix    = "wal/"
	LocksPrefix  = "locks/"
)

const (
	walSuffix      = ".lz4"
	manifestName   = "manifest.json"
	pgManifestName = "backup_manifest"
)

// ChunkKey is the key of a chunk. Chunks are fanned out by the first two hex
// digits of their ID so that no single prefix grows without bound, which
// some stores throttle. id must satisfy manifest.ValidChunkID.
func ChunkKey(id string) string {
	return ChunksPrefix + id[:2] + "/" + id
}

// WALKey is the key of a compressed WAL segment or timeline history file,
// grouped by timeline (the first eight hex digits of either name) so that a
// restore can list one timeline's WAL. name must be at least 8 characters.
func WALKey(name string) string {
	return WALPrefix + name[:8] + "/" + name + walSuffix
}

// BackupManifestKey is the key of a backup's manifest. Writing it is the
// commit point of the backup.
func BackupManifestKey(id string) string {
	return BackupsPrefix + id + "/" + manifestName
}

// PGManifestKey is the key of PostgreSQL's own backup_manifest of a backup,
// kept so a restore can hand it to pg_verifybackup.
func PGManifestKey(id string) string {
	return BackupsPrefix + id + "/" + pgManifestName
}

// BackupIDFromKey returns the backup ID of a BackupManifestKey. Only
// manifest keys are recognised, because a backup without a manifest is not
// committed and must not be listed.
func BackupIDFromKey(key string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(key, BackupsPrefix)
	if !ok {
		return "", false
	}
	id, ok = strings.CutSuffix(rest, "/"+manifestName)
	if !ok || !manifest.ValidBackupID(id) {
		return "", false
	}
	return id, true
}

// ChunkIDFromKey returns the chunk id of a ChunkKey.
func ChunkIDFromKey(key string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(key, ChunksPrefix)
	if !ok || len(rest) != 2+1+64 || rest[2] != '/' {
		return "", false
	}
	id = rest[3:]
	if !manifest.ValidChunkID(id) || rest[:2] != id[:2] {
		return "", false
	}
	return id, true
}

// WALNameFromKey returns the WAL file name of a WALKey, which must be one
// manifest.ValidWALName accepts.
func WALNameFromKey(key string) (name string, ok bool) {
	rest, ok := strings.CutPrefix(key, WALPrefix)
	if !ok || len(rest) < 9 || rest[8] != '/' {
		return "", false
	}
	name, ok = strings.CutSuffix(rest[9:], walSuffix)
	if !ok || !manifest.ValidWALName(name) || name[:8] != rest[:8] {
		return "", false
	}
	return name, true
}

// BackupIDOfKey returns the backup id of any key under backups/<id>/,
// committed or not, so leftovers of a failed backup can be found.
func BackupIDOfKey(key string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(key, BackupsPrefix)
	if !ok {
		return "", false
	}
	id, _, ok = strings.Cut(rest, "/")
	if !ok || !manifest.ValidBackupID(id) {
		return "", false
	}
	return id, true
}

// LockKey is the key of one lease or lock: kind is "backup" or "prune",
// name is unique to its holder. Every holder writes its own object and
// nobody overwrites another's, because the stores offer no conditional
// delete to break a stale shared lock safely.
func LockKey(kind, name string) string {
	return LocksPrefix + kind + "-" + name + ".json"
}

// LockFromKey splits a LockKey.
func LockFromKey(key string) (kind, name string, ok bool) {
	rest, ok := strings.CutPrefix(key, LocksPrefix)
	if !ok {
		return "", "", false
	}
	rest, ok = strings.CutSuffix(rest, ".json")
	if !ok {
		return "", "", false
	}
	kind, name, ok = strings.Cut(rest, "-")
	if !ok || kind == "" || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return kind, name, true
}
