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
	major, _ := formatMajor(b.FormatVersion) // checked just above
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
	if err := b.validateArchives(major); err != nil {
		return err
	}
	if b.BlockSize != 0 && !validBlockSize(b.BlockSize) {
		return fmt.Errorf("invalid block_size %d: want a power of two from 1 KiB to 32 KiB, as PostgreSQL's BLCKSZ", b.BlockSize)
	}
	if err := b.validateFiles(); err != nil {
		return err
	}
	if err := b.Incremental.validate(); err != nil {
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

// validateArchives checks each archive's chunk references and that they
// add up to its sizes. A sliced reference needs format major 2: a reader of
// major 1 would take it for the whole chunk.
func (b *Backup) validateArchives(major int) error {
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
			if err := c.validateSlice(major); err != nil {
				return fmt.Errorf("archive %d (%s): chunk %d (%s): %w", i, a.Name, j, c.ID, err)
			}
			var ok bool
			if raw, ok = addSize(raw, c.Len()); !ok {
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

// validateSlice checks a reference's offset and length against its chunk.
func (c ChunkRef) validateSlice(major int) error {
	switch {
	case c.Offset < 0 || c.Length < 0:
		return fmt.Errorf("negative offset %d or length %d", c.Offset, c.Length)
	case c.Offset != 0 && c.Length == 0:
		return fmt.Errorf("offset %d without a length", c.Offset)
	case c.Length > c.RawSize-c.Offset: // written so it cannot overflow
		return fmt.Errorf("slice [%d, %d+%d) beyond the chunk's %d bytes", c.Offset, c.Offset, c.Length, c.RawSize)
	case c.Sliced() && major < 2:
		return fmt.Errorf("a sliced reference (offset %d, length %d) in a format %d.x manifest: slices need format 2", c.Offset, c.Length, major)
	}
	return nil
}

// validBlockSize accepts the block sizes PostgreSQL can be built with.
func validBlockSize(n int) bool {
	return n >= 1024 && n <= 32768 && n&(n-1) == 0
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
		if err := b.validateBlockCRCs(&f); err != nil {
			return fmt.Errorf("file %d (%s): %w", i, f.Path, err)
		}
	}
	return nil
}

// validateBlockCRCs checks that a file's block CRCs, if any, are one per
// block_size block of its content: the next incremental backup combines
// them into the CRC32C of files it assembles, and a count that does not
// match the size would give it wrong ones.
func (b *Backup) validateBlockCRCs(f *File) error {
	if len(f.BlockCRC32C) == 0 {
		return nil
	}
	switch {
	case b.BlockSize == 0:
		return errors.New("block_crc32c without the backup's block_size")
	case f.Type != TypeFile:
		return fmt.Errorf("block_crc32c on a %s", f.Type)
	}
	bs := int64(b.BlockSize)
	if want := f.Size/bs + min(f.Size%bs, 1); int64(len(f.BlockCRC32C)) != want {
		return fmt.Errorf("%d block_crc32c values for %d bytes: want %d (one per %d-byte block)", len(f.BlockCRC32C), f.Size, want, bs)
	}
	return nil
}

// validate checks the incremental record, if any. It is informational
// (nothing follows Parent at restore), so only its form is checked.
func (inc *Incremental) validate() error {
	switch {
	case inc == nil:
		return nil
	case !ValidBackupID(inc.Parent):
		return fmt.Errorf("incremental: invalid parent backup id %q", inc.Parent)
	case inc.SentBytes < 0 || inc.IncrementalFiles < 0 || inc.ChangedBlocks < 0:
		return fmt.Errorf("incremental: negative value in %+v", *inc)
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
