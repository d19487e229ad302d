package manifest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Validate checks everything a restore relies on, so that a manifest that
// passes cannot make a restore read outside an archive, write outside its
// target directory, or allocate without bound. Encode and Decode call it;
// the first problem found is returned.
func (b *Backup) Validate() error {
	if b == nil {
		return errors.New("nil backup")
	}
	if !ValidBackupID(b.ID) {
		return fmt.Errorf("invalid backup id %q: want a UTC time such as 20261123T204651Z", b.ID)
	}
	if err := checkVersion(b.FormatVersion); err != nil {
		return err
	}
	if b.SystemID != "" {
		if _, err := strconv.ParseUint(b.SystemID, 10, 64); err != nil {
			return fmt.Errorf("invalid system_id %q: want a decimal 64-bit number", b.SystemID)
		}
	}
	if b.StartLSN > b.EndLSN {
		return fmt.Errorf("start_lsn %s is after end_lsn %s", b.StartLSN, b.EndLSN)
	}
	if !ValidSegmentSize(b.WALSegmentSize) {
		return fmt.Errorf("invalid wal_segment_size %d: want a power of two from 1 MiB to 1 GiB", b.WALSegmentSize)
	}
	if b.PGManifestSHA256 != "" && !isLowerHex(b.PGManifestSHA256, 64) {
		return fmt.Errorf("invalid pg_manifest_sha256 %q: want 64 lower-case hex digits", b.PGManifestSHA256)
	}
	if err := b.validateWAL(); err != nil {
		return err
	}
	if err := b.validateArchives(); err != nil {
		return err
	}
	if err := b.validateFiles(); err != nil {
		return err
	}
	return b.Totals.validate()
}

func (b *Backup) validateWAL() error {
	if len(b.WAL) > maxCount {
		return fmt.Errorf("%d WAL segments, more than the limit of %d", len(b.WAL), maxCount)
	}
	for i, w := range b.WAL {
		// Timeline history files travel with the segments when a backup
		// spans a timeline switch.
		if _, _, err := ParseSegmentName(w.Name, b.WALSegmentSize); err != nil {
			_, herr := parseHistoryFileName(w.Name)
			_, _, _, _, perr := ParsePartialSegmentName(w.Name, b.WALSegmentSize)
			switch {
			case perr == nil && i != len(b.WAL)-1:
				// Only a backup's last segment can be partial: one
				// before it would leave a gap in the WAL replayed.
				return fmt.Errorf("wal %d: partial segment %s is not the last of the backup's WAL", i, w.Name)
			case herr != nil && perr != nil:
				return fmt.Errorf("wal %d: %w", i, err)
			}
		}
		if w.SHA256 != "" && !isLowerHex(w.SHA256, 64) {
			return fmt.Errorf("wal %d (%s): invalid sha256 %q", i, w.Name, w.SHA256)
		}
		if w.StoredSize < 0 {
			return fmt.Errorf("wal %d (%s): negative stored_size %d", i, w.Name, w.StoredSize)
		}
	}
	return nil
}

func (b *Backup) validateArchives() error {
	chunks := 0
	for i, a := range b.Archives {
		if err := validArchiveName(a.Name); err != nil {
			return fmt.Errorf("archive %d: %w", i, err)
		}
		if a.RawSize < 0 || a.StoredSize < 0 {
			return fmt.Errorf("archive %d (%s): negative size (raw_size %d, stored_size %d)", i, a.Name, a.RawSize, a.StoredSize)
		}
		chunks += len(a.Chunks)
		if chunks > maxCount {
			return fmt.Errorf("more than %d chunks", maxCount)
		}
		var raw, stored int64
		for j, c := range a.Chunks {
			if !ValidChunkID(c.ID) {
				return fmt.Errorf("archive %d (%s): chunk %d: invalid chunk id %q: want 64 lower-case hex digits", i, a.Name, j, c.ID)
			}
			if c.Codec != "lz4" {
				return fmt.Errorf("archive %d (%s): chunk %d (%s): unknown codec %q", i, a.Name, j, c.ID, c.Codec)
			}
			if c.RawSize < 0 || c.StoredSize < 0 {
				return fmt.Errorf("archive %d (%s): chunk %d (%s): negative size (raw_size %d, stored_size %d)", i, a.Name, j, c.ID, c.RawSize, c.StoredSize)
			}
			var ok bool
			if raw, ok = addSize(raw, c.RawSize); !ok {
				return fmt.Errorf("archive %d (%s): chunk raw sizes overflow", i, a.Name)
			}
			if stored, ok = addSize(stored, c.StoredSize); !ok {
				return fmt.Errorf("archive %d (%s): chunk stored sizes overflow", i, a.Name)
			}
		}
		if raw != a.RawSize {
			return fmt.Errorf("archive %d (%s): raw_size %d, but its chunks add up to %d", i, a.Name, a.RawSize, raw)
		}
		if stored != a.StoredSize {
			return fmt.Errorf("archive %d (%s): stored_size %d, but its chunks add up to %d", i, a.Name, a.StoredSize, stored)
		}
	}
	return nil
}

// addSize adds two non-negative sizes, reporting false on overflow.
func addSize(a, b int64) (int64, bool) {
	s := a + b
	return s, s >= a
}

// validArchiveName accepts a plain file name: a restore may write the
// archive under this name.
func validArchiveName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return fmt.Errorf("invalid archive name %q", name)
	}
	return nil
}

func (b *Backup) validateFiles() error {
	if len(b.Files) > maxCount {
		return fmt.Errorf("%d files, more than the limit of %d", len(b.Files), maxCount)
	}
	for i, f := range b.Files {
		if err := validPath(f.Path, f.Type == TypeDir); err != nil {
			return fmt.Errorf("file %d: %w", i, err)
		}
		switch f.Type {
		case TypeFile, TypeDir:
		case TypeSymlink:
			if f.LinkTarget == "" {
				return fmt.Errorf("file %d (%s): symlink with an empty target", i, f.Path)
			}
			if strings.IndexByte(f.LinkTarget, 0) >= 0 {
				return fmt.Errorf("file %d (%s): symlink target contains NUL", i, f.Path)
			}
		default:
			return fmt.Errorf("file %d (%s): unknown type %q", i, f.Path, f.Type)
		}
		if f.SHA256 != "" && (f.Type != TypeFile || !isLowerHex(f.SHA256, 64)) {
			return fmt.Errorf("file %d (%s): invalid sha256 %q: want 64 lower-case hex digits, on a regular file", i, f.Path, f.SHA256)
		}
		if f.Archive < 0 || f.Archive >= len(b.Archives) {
			return fmt.Errorf("file %d (%s): archive index %d out of range (%d archives)", i, f.Path, f.Archive, len(b.Archives))
		}
		if f.Size < 0 || f.Offset < 0 {
			return fmt.Errorf("file %d (%s): negative size %d or offset %d", i, f.Path, f.Size, f.Offset)
		}
		a := b.Archives[f.Archive]
		if f.Size > a.RawSize-f.Offset { // written so it cannot overflow
			return fmt.Errorf("file %d (%s): offset %d + size %d is beyond the end of %s (%d bytes)", i, f.Path, f.Offset, f.Size, a.Name, a.RawSize)
		}
	}
	return nil
}

// validPath refuses tar member names a restore must never create: absolute
// paths, paths that climb out (".."), non-canonical elements that could
// alias another member, backslashes (separators on Windows) and NUL.
// Directories may carry one trailing slash, as tar writers often add it.
func validPath(p string, dir bool) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("path %q contains NUL", p)
	case strings.IndexByte(p, '\\') >= 0:
		return fmt.Errorf("path %q contains a backslash", p)
	case p[0] == '/':
		return fmt.Errorf("path %q is absolute", p)
	}
	rest := p
	if dir {
		rest = strings.TrimSuffix(rest, "/")
	}
	for elem := range strings.SplitSeq(rest, "/") {
		switch elem {
		case "":
			return fmt.Errorf("path %q has an empty element", p)
		case ".", "..":
			return fmt.Errorf("path %q has a %q element", p, elem)
		}
	}
	return nil
}

func (t Totals) validate() error {
	if t.RawBytes < 0 || t.StoredBytes < 0 || t.NewBytes < 0 || t.WALBytes < 0 ||
		t.Chunks < 0 || t.NewChunks < 0 || t.Files < 0 {
		return fmt.Errorf("totals: negative value in %+v", t)
	}
	return nil
}
