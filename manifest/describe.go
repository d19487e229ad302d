package manifest

import (
	"fmt"
	"strings"
)

// FilesIn names the members whose content (or, for members without
// content, whose header) lies in bytes [off, off+size) of archive a, for
// messages about a chunk: the user wants to know what a missing or corrupt
// chunk affects. Offsets are the archive's, as its references concatenate
// (ChunkOffsets): for a reference, its offset and Len, which for a slice
// is less than its chunk. At most five are named; the rest are counted.
func (b *Backup) FilesIn(a int, off, size int64) string {
	const show = 5
	var names []string
	n := 0
	for _, f := range b.Files {
		if f.Archive != a {
			continue
		}
		end := f.Offset + max(f.Size, 1)
		if f.Offset < off+size && end > off {
			n++
			if len(names) < show {
				names = append(names, b.DisplayPath(a, f.Path))
			}
		}
	}
	switch {
	case n == 0:
		return "no file content (only tar headers or padding)"
	case n > len(names):
		return strings.Join(names, ", ") + fmt.Sprintf(" and %d more", n-len(names))
	default:
		return strings.Join(names, ", ")
	}
}

// DisplayPath names a member of archive a as a path under the data
// directory, the way PostgreSQL's backup_manifest does.
func (b *Backup) DisplayPath(a int, path string) string {
	p, _ := pgPath(path, b.Archives[a].TablespaceOID)
	return p
}

// ChunkOffsets returns where each chunk reference of archive a starts
// within it.
func (b *Backup) ChunkOffsets(a int) []int64 {
	chunks := b.Archives[a].Chunks
	offs := make([]int64, len(chunks))
	var off int64
	for i, c := range chunks {
		offs[i] = off
		off += c.Len()
	}
	return offs
}

// HumanBytes formats a byte count in powers of 1024 for messages and
// listings ("20.5 MiB").
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
