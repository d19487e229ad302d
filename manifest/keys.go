package manifest

import "time"

// backupIDLayout is the time layout of a backup id; pgManifestName the
// name PostgreSQL gives its own backup manifest.
const (
	backupIDLayout = "20060102T150405Z"
	pgManifestName = "backup_manifest"
)

// NewBackupID names a backup after its start time in UTC, to the second.
// IDs sort as the backups were taken and read as dates.
func NewBackupID(t time.Time) string {
	return t.UTC().Format(backupIDLayout)
}

// ValidBackupID reports whether id is what NewBackupID produces. IDs become
// parts of object keys and restore paths, so nothing else is allowed.
func ValidBackupID(id string) bool {
	if len(id) != len(backupIDLayout) {
		return false
	}
	t, err := time.Parse(backupIDLayout, id)
	return err == nil && t.Format(backupIDLayout) == id
}

// ValidChunkID reports whether id is a chunk ID: the lower-case hex SHA-256
// of the chunk's uncompressed bytes.
func ValidChunkID(id string) bool {
	return isLowerHex(id, 64)
}

// isLowerHex reports whether s is exactly n lower-case hex digits, the form
// encoding/hex writes.
func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
