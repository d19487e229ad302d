// Package manifest defines pgstow's repository format: the backup manifest
// (the commit point of a backup), the repository configuration, backup
// and chunk ids and WAL file names, PostgreSQL's own backup_manifest and
// the cross-check of a backup's files against it, and the LSN and
// WAL-segment arithmetic that decides which WAL a backup needs. The object
// keys these become are the repository package's. It is pure: no I/O.
package manifest

import (
	"fmt"
	"time"
)

// FormatVersion is written into the manifest of every full backup.
// Readers accept any minor version of a major they know and refuse other
// majors. 1.1 added partial WAL segments and chunks' stored_crc32c, 1.2
// files' sha256, 1.3 relation files' block_crc32c and the backup's
// block_size (docs/repository-format.md).
const FormatVersion = "1.3"

// FormatVersionIncremental is written into the manifest of an incremental
// backup. Its archives slice chunks (ChunkRef.Length), which a reader of
// format 1 would misread as whole chunks: the major version makes such a
// reader refuse the backup instead.
const FormatVersionIncremental = "2.0"

// LSN is a PostgreSQL write-ahead log position.
type LSN uint64

// Backup is pgstow's manifest of one committed backup.
type Backup struct {
	FormatVersion  string       `json:"format_version"`
	ID             string       `json:"id"` // UTC start time, e.g. 20261123T204651Z; sortable
	Label          string       `json:"label"`
	ToolVersion    string       `json:"tool_version"`
	PGVersion      int          `json:"pg_version"` // server_version_num, e.g. 150018
	SystemID       string       `json:"system_id"`  // decimal; a string so JSON readers keep all 64 bits
	StartTimeline  uint32       `json:"start_timeline"`
	EndTimeline    uint32       `json:"end_timeline"`
	StartLSN       LSN          `json:"start_lsn"` // JSON as "X/X"
	EndLSN         LSN          `json:"end_lsn"`
	WALSegmentSize uint64       `json:"wal_segment_size"`
	WAL            []WALSegment `json:"wal"` // every segment a restore needs, in order
	Tablespaces    []Tablespace `json:"tablespaces"`
	Archives       []Archive    `json:"archives"`
	Files          []File       `json:"files"`
	// PGManifestSHA256 is the SHA-256 of PostgreSQL's backup_manifest as
	// stored next to this manifest.
	PGManifestSHA256 string `json:"pg_manifest_sha256"`
	// BlockSize is the server's BLCKSZ, set when relation files carry
	// BlockCRC32C (backups of PostgreSQL 17+, format 1.3 on).
	BlockSize int `json:"block_size,omitempty"`
	// Incremental is set when the server sent only what changed since a
	// parent backup (BASE_BACKUP INCREMENTAL); the manifest still describes
	// every file whole, so nothing reads the parent at restore.
	Incremental *Incremental `json:"incremental,omitempty"`
	Totals      Totals       `json:"totals"`
	Timings     Timings      `json:"timings"`
	// Retention is set in an immutable repository: how long the backup's
	// objects are locked. Readers before it ignore it.
	Retention *BackupRetention `json:"retention,omitempty"`
}

// Incremental says how an incremental backup was taken. It is a record for
// people and for the backup policy: restore, verify and retention never
// follow Parent.
type Incremental struct {
	// Parent is the id of the backup whose PostgreSQL backup_manifest was
	// uploaded (UPLOAD_MANIFEST); it may since have been deleted.
	Parent         string `json:"parent"`
	ParentStartLSN LSN    `json:"parent_start_lsn"`
	// FullStarted is when the last full backup this one descends from
	// started, for --full-every.
	FullStarted time.Time `json:"full_started"`
	// SentBytes is what the server sent: the archives' bytes as streamed.
	SentBytes int64 `json:"sent_bytes"`
	// IncrementalFiles is how many files came as INCREMENTAL.<name>, and
	// ChangedBlocks how many blocks they held.
	IncrementalFiles int   `json:"incremental_files"`
	ChangedBlocks    int64 `json:"changed_blocks"`
}

// WALSegment is one WAL segment file a restore needs.
type WALSegment struct {
	Name       string `json:"name"` // 24 hex digits, e.g. 000000010000000000000003
	SHA256     string `json:"sha256"`
	StoredSize int64  `json:"stored_size"`
}

// Tablespace is a user tablespace of the backed-up cluster.
type Tablespace struct {
	OID      uint32 `json:"oid"`
	Location string `json:"location"`
}

// Archive is one tar archive of the backup: base.tar or <oid>.tar. The
// concatenation of its chunks, decompressed, is the archive byte for byte.
type Archive struct {
	Name          string     `json:"name"`           // "base.tar" or "16384.tar"
	TablespaceOID uint32     `json:"tablespace_oid"` // 0 for the main data directory
	RawSize       int64      `json:"raw_size"`
	StoredSize    int64      `json:"stored_size"`
	Chunks        []ChunkRef `json:"chunks"`
}

// ChunkRef names one chunk of an archive, in archive order.
type ChunkRef struct {
	ID         string `json:"id"` // hex SHA-256 of the uncompressed bytes
	RawSize    int64  `json:"raw_size"`
	StoredSize int64  `json:"stored_size"`
	Codec      string `json:"codec"` // "lz4"
	// StoredCRC32C is the Castagnoli CRC of the stored object's bytes
	// (the LZ4 frame; in an encrypted repository, the frame before it is
	// sealed), as uploaded. A full verify compares it, which catches a
	// stored frame changed in a way that still decodes to the right
	// content. The frame is not a function of the content (the liblz4 and
	// the pure-Go encoders write different ones), so it cannot be
	// recomputed: it is recorded by the backup that uploads the chunk and
	// carried forward by later ones from the previous manifest. Nil when
	// not known: manifests before this field, and a deduplicated chunk the
	// previous backup recorded none for.
	StoredCRC32C *uint32 `json:"stored_crc32c,omitempty"`
	// Offset and Length, when Length is positive, make the reference a
	// slice: the archive holds the chunk's raw bytes [Offset,
	// Offset+Length), not all of them (format 2.x, incremental backups).
	// A chunk may then appear in several references.
	Offset int64 `json:"offset,omitempty"`
	Length int64 `json:"length,omitempty"`
}

// Len is how many bytes of the archive the reference contributes.
func (c ChunkRef) Len() int64 {
	if c.Length > 0 {
		return c.Length
	}
	return c.RawSize
}

// Sliced reports whether the reference is a slice of its chunk.
func (c ChunkRef) Sliced() bool { return c.Length > 0 }

// FileType is the kind of a tar member.
type FileType string

const (
	TypeFile    FileType = "file"
	TypeDir     FileType = "dir"
	TypeSymlink FileType = "symlink"
)

// File is one member of an archive.
type File struct {
	// Path is relative to the data directory for base.tar, and relative to
	// the tablespace directory for a tablespace archive, as in the tar.
	Path   string   `json:"path"`
	Type   FileType `json:"type"`
	Mode   uint32   `json:"mode"`  // permission bits
	MTime  int64    `json:"mtime"` // Unix seconds
	Size   int64    `json:"size,omitempty"`
	CRC32C uint32   `json:"crc32c,omitempty"` // Castagnoli CRC of the content
	// SHA256 is the hex SHA-256 of the content of a file PostgreSQL ends
	// with the CRC32C of what precedes it (pgdata.SealedByCRC), whose
	// CRC32C is therefore the same for every valid version: a delta
	// restore compares this instead. Empty for other files, and in
	// manifests before format 1.2.
	SHA256 string `json:"sha256,omitempty"`
	// BlockCRC32C is the CRC32C of each Backup.BlockSize block of a
	// relation file's content, in order (JSON: base64 of the little-endian
	// values). Recorded for backups of PostgreSQL 17+ (format 1.3), so an
	// incremental backup can give each file it assembles from a parent's
	// blocks and new ones its whole CRC32C without reading old data.
	BlockCRC32C BlockCRCs `json:"block_crc32c,omitempty"`
	LinkTarget  string    `json:"link_target,omitempty"`
	Archive     int       `json:"archive"` // index into Backup.Archives
	// Offset is where the member's content starts within its archive, so a
	// reader can find the chunk that holds it.
	Offset int64 `json:"offset"`
}

// Totals sums up a backup.
type Totals struct {
	RawBytes    int64 `json:"raw_bytes"`    // all archives, uncompressed
	StoredBytes int64 `json:"stored_bytes"` // all chunks referenced, compressed
	NewBytes    int64 `json:"new_bytes"`    // chunk bytes this backup uploaded (not deduplicated)
	Chunks      int   `json:"chunks"`
	NewChunks   int   `json:"new_chunks"`
	Files       int   `json:"files"`
	WALBytes    int64 `json:"wal_bytes"` // stored size of the required WAL
}

// Timings records when the backup ran.
type Timings struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
}

// Repo is the repository configuration, written once at first use. It binds
// a repository to one cluster, because WAL segment names of two clusters
// would collide.
type Repo struct {
	FormatVersion  string    `json:"format_version"`
	SystemID       string    `json:"system_id"`
	WALSegmentSize uint64    `json:"wal_segment_size"`
	Created        time.Time `json:"created"`
	// Encryption is set when every object but this one and the leases is
	// encrypted; nil for a plain repository.
	Encryption *RepoEncryption `json:"encryption,omitempty"`
	// Immutability is set when every object pgstow writes (but the
	// leases) is locked against deletion for a retention period
	// (docs/immutability.md); nil for a repository without locks. Such a
	// configuration has format version 2.0 (RepoFormatVersionImmutable),
	// which pgstow before immutable repositories refuses: it would write
	// unlocked objects and fail to delete locked ones.
	Immutability *RepoImmutability `json:"immutability,omitempty"`
}

// RepoFormatVersionImmutable is the configuration's format version when
// Immutability is set; plain repositories keep 1.x, readable by every
// pgstow.
const RepoFormatVersionImmutable = "2.0"

// RepoImmutability is an immutable repository's lock policy.
type RepoImmutability struct {
	// Mode is "governance" or "compliance" (providers.LockMode).
	Mode string `json:"mode"`
	// Retention is how long each object stays locked after it is
	// written (or after the newest backup that uses it is committed), as
	// a Go duration ("720h0m0s"); at least one second.
	Retention string `json:"retention"`
}

// Period parses Retention.
func (i *RepoImmutability) Period() (time.Duration, error) {
	d, err := time.ParseDuration(i.Retention)
	if err != nil {
		return 0, fmt.Errorf("immutability retention %q: %w", i.Retention, err)
	}
	if d < time.Second {
		return 0, fmt.Errorf("immutability retention %q: must be at least 1s", i.Retention)
	}
	return d, nil
}

// Validate checks the mode and the retention.
func (i *RepoImmutability) Validate() error {
	if i.Mode != "governance" && i.Mode != "compliance" {
		return fmt.Errorf("immutability mode %q: want governance or compliance", i.Mode)
	}
	_, err := i.Period()
	return err
}

// BackupRetention records the locks of an immutable repository's backup
// (docs/immutability.md): its manifests are locked until Until, and every
// chunk and WAL segment it references at least until ObjectsUntil (never
// before Until). A later backup that shares chunks with it need not ask
// the store about them while ObjectsUntil covers its own Until.
type BackupRetention struct {
	Mode         string    `json:"mode"`
	Until        time.Time `json:"until"`
	ObjectsUntil time.Time `json:"objects_until"`
}

// RepoEncryption records how a repository is encrypted and a fingerprint
// of the key, so a wrong key or a missing one is refused at once.
type RepoEncryption struct {
	Algorithm      string `json:"algorithm"`
	KeyFingerprint string `json:"key_fingerprint"`
	// ConfigMAC authenticates the configuration with the key, as this
	// object is the only one stored in the clear.
	ConfigMAC string `json:"config_mac"`
}

// BlockCRCs are a file's per-block CRC32C values; see File.BlockCRC32C.
type BlockCRCs []uint32
