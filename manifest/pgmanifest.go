package manifest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// PGManifest is PostgreSQL's own backup_manifest (PostgreSQL 13 and later),
// which the server sends after the archives. We keep it to cross-check the
// archives against the server's view and so that pg_verifybackup can check
// a restored directory.
type PGManifest struct {
	Version   int    // 1 for PostgreSQL 13–16, 2 from 17
	SystemID  uint64 // version 2 only; 0 for version 1
	Files     []PGFile
	WALRanges []PGWALRange
}

// PGFile is one file entry of a backup_manifest.
type PGFile struct {
	// Path is relative to the data directory; files of user tablespaces
	// appear under pg_tblspc/<oid>/. An Encoded-Path is decoded into it, so
	// it may hold bytes that are not UTF-8.
	Path         string
	Size         int64
	LastModified string // as written, e.g. "2024-11-23 20:46:51 GMT"
	// ChecksumAlgorithm is "" (none given), "NONE", "CRC32C", "SHA224",
	// "SHA256", "SHA384" or "SHA512", upper-cased.
	ChecksumAlgorithm string
	Checksum          string // hex as in the file
}

// PGWALRange is one entry of a backup_manifest's WAL-Ranges: the WAL on one
// timeline that the backup needs. There are several when the backup spans
// a timeline switch.
type PGWALRange struct {
	Timeline   uint32
	Start, End LSN
}

// pgChecksumKey is the last member of PostgreSQL's backup_manifest.
const pgChecksumKey = "Manifest-Checksum"

// pgChecksumHexLen maps the checksum algorithms PostgreSQL supports to the
// length of their hex digests.
var pgChecksumHexLen = map[string]int{
	"NONE":   0,
	"CRC32C": 8,
	"SHA224": 56,
	"SHA256": 64,
	"SHA384": 96,
	"SHA512": 128,
}

// The JSON shape of a backup_manifest. Pointers tell a missing member from a
// zero one, since PostgreSQL's own parser requires several of them.
type (
	pgManifestJSON struct {
		Version   *int              `json:"PostgreSQL-Backup-Manifest-Version"`
		SystemID  *uint64           `json:"System-Identifier"`
		Files     *[]pgFileJSON     `json:"Files"`
		WALRanges *[]pgWALRangeJSON `json:"WAL-Ranges"`
	}
	pgFileJSON struct {
		Path              *string `json:"Path"`
		EncodedPath       *string `json:"Encoded-Path"`
		Size              *int64  `json:"Size"`
		LastModified      string  `json:"Last-Modified"`
		ChecksumAlgorithm *string `json:"Checksum-Algorithm"`
		Checksum          *string `json:"Checksum"`
	}
	pgWALRangeJSON struct {
		Timeline *uint32 `json:"Timeline"`
		Start    *LSN    `json:"Start-LSN"`
		End      *LSN    `json:"End-LSN"`
	}
)

// ParsePGManifest verifies the Manifest-Checksum of a backup_manifest and
// parses it. The checksum is the SHA-256 of every byte before the line that
// holds "Manifest-Checksum", which PostgreSQL writes as the last line.
// Versions 1 and 2 are accepted; a later version may change the format in
// ways we cannot check, so it is refused.
func ParsePGManifest(data []byte) (*PGManifest, error) {
	covered, stored, err := splitChecksum(data, pgChecksumKey)
	if err != nil {
		return nil, fmt.Errorf("parse backup_manifest: %w", err)
	}
	sum := sha256.Sum256(covered)
	if computed := hex.EncodeToString(sum[:]); !strings.EqualFold(stored, computed) {
		return nil, fmt.Errorf("backup_manifest %w: stored %s, computed %s — the backup_manifest is corrupt", ErrChecksumMismatch, stored, computed)
	}
	var doc pgManifestJSON
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse backup_manifest: %w", err)
	}
	m := &PGManifest{}
	switch {
	case doc.Version == nil:
		return nil, errors.New("parse backup_manifest: missing PostgreSQL-Backup-Manifest-Version")
	case *doc.Version == 1:
	case *doc.Version == 2:
		if doc.SystemID == nil {
			return nil, errors.New("parse backup_manifest: version 2 without System-Identifier")
		}
		m.SystemID = *doc.SystemID
	default:
		return nil, fmt.Errorf("parse backup_manifest: %w %d: versions 1 and 2 are supported", ErrUnsupportedVersion, *doc.Version)
	}
	m.Version = *doc.Version
	if doc.Files == nil {
		return nil, errors.New("parse backup_manifest: missing Files")
	}
	if doc.WALRanges == nil {
		return nil, errors.New("parse backup_manifest: missing WAL-Ranges")
	}
	if n := len(*doc.Files); n > maxCount {
		return nil, fmt.Errorf("parse backup_manifest: %d files, more than the limit of %d", n, maxCount)
	}
	m.Files = make([]PGFile, 0, len(*doc.Files))
	for i, jf := range *doc.Files {
		f, err := jf.file()
		if err != nil {
			return nil, fmt.Errorf("parse backup_manifest: file %d: %w", i, err)
		}
		m.Files = append(m.Files, f)
	}
	if n := len(*doc.WALRanges); n > maxCount {
		return nil, fmt.Errorf("parse backup_manifest: %d WAL ranges, more than the limit of %d", n, maxCount)
	}
	m.WALRanges = make([]PGWALRange, 0, len(*doc.WALRanges))
	for i, jr := range *doc.WALRanges {
		switch {
		case jr.Timeline == nil || jr.Start == nil || jr.End == nil:
			return nil, fmt.Errorf("parse backup_manifest: WAL range %d: want Timeline, Start-LSN and End-LSN", i)
		case *jr.Timeline == 0:
			return nil, fmt.Errorf("parse backup_manifest: WAL range %d: timeline 0 does not exist", i)
		case *jr.Start > *jr.End:
			return nil, fmt.Errorf("parse backup_manifest: WAL range %d: Start-LSN %s is after End-LSN %s", i, *jr.Start, *jr.End)
		}
		m.WALRanges = append(m.WALRanges, PGWALRange{Timeline: *jr.Timeline, Start: *jr.Start, End: *jr.End})
	}
	return m, nil
}

// file checks one file entry with the rules of PostgreSQL's own parser
// (exactly one of Path and Encoded-Path, a size, no checksum without an
// algorithm) plus a known algorithm and a digest of the right length.
func (jf pgFileJSON) file() (PGFile, error) {
	var f PGFile
	switch {
	case jf.Path != nil && jf.EncodedPath != nil:
		return f, errors.New("both Path and Encoded-Path")
	case jf.Path != nil:
		f.Path = *jf.Path
	case jf.EncodedPath != nil:
		p, err := hex.DecodeString(*jf.EncodedPath)
		if err != nil {
			return f, fmt.Errorf("bad Encoded-Path %q: %w", *jf.EncodedPath, err)
		}
		f.Path = string(p)
	default:
		return f, errors.New("missing Path")
	}
	if f.Path == "" {
		return f, errors.New("empty path")
	}
	if jf.Size == nil {
		return f, fmt.Errorf("%s: missing Size", f.Path)
	}
	if *jf.Size < 0 {
		return f, fmt.Errorf("%s: negative Size %d", f.Path, *jf.Size)
	}
	f.Size = *jf.Size
	f.LastModified = jf.LastModified
	if jf.ChecksumAlgorithm == nil {
		if jf.Checksum != nil {
			return f, fmt.Errorf("%s: Checksum without Checksum-Algorithm", f.Path)
		}
		return f, nil
	}
	f.ChecksumAlgorithm = strings.ToUpper(*jf.ChecksumAlgorithm)
	want, ok := pgChecksumHexLen[f.ChecksumAlgorithm]
	if !ok {
		return f, fmt.Errorf("%s: unknown Checksum-Algorithm %q", f.Path, *jf.ChecksumAlgorithm)
	}
	if jf.Checksum != nil {
		f.Checksum = *jf.Checksum
	}
	if len(f.Checksum) != want || (want > 0 && !isHex(f.Checksum)) {
		return f, fmt.Errorf("%s: %s Checksum %q: want %d hex digits", f.Path, f.ChecksumAlgorithm, f.Checksum, want)
	}
	return f, nil
}

// PGChecksumCRC32C converts a CRC32C checksum as a backup_manifest writes it
// into the CRC value. PostgreSQL hex-encodes the bytes of the uint32 as they
// lie in memory, which on the little-endian machines it runs on reverses
// the byte order: CRC 0xE3069283 is written "839206e3".
func PGChecksumCRC32C(hexs string) (uint32, error) {
	if len(hexs) != 8 {
		return 0, fmt.Errorf("parse CRC32C checksum %q: want 8 hex digits", hexs)
	}
	b, err := hex.DecodeString(hexs)
	if err != nil {
		return 0, fmt.Errorf("parse CRC32C checksum %q: %w", hexs, err)
	}
	return binary.LittleEndian.Uint32(b), nil
}
