package manifest

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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

// pgChecksumAlgorithm returns the package's own copy of the upper-cased
// algorithm name, so that a hundred thousand entries share one string
// instead of each holding what the decoder allocated.
func pgChecksumAlgorithm(name string) (string, bool) {
	switch strings.ToUpper(name) {
	case "NONE":
		return "NONE", true
	case "CRC32C":
		return "CRC32C", true
	case "SHA224":
		return "SHA224", true
	case "SHA256":
		return "SHA256", true
	case "SHA384":
		return "SHA384", true
	case "SHA512":
		return "SHA512", true
	}
	return "", false
}

// The JSON shape of a backup_manifest. Pointers tell a missing member from a
// zero one, since PostgreSQL's own parser requires several of them.
type (
	// pgManifestJSON is all but Files, which is streamed (pgFiles).
	pgManifestJSON struct {
		Version   *int              `json:"PostgreSQL-Backup-Manifest-Version"`
		SystemID  *uint64           `json:"System-Identifier"`
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

// header checks the document's version, and the System-Identifier that
// version 2 requires, and returns the manifest they begin.
func (doc *pgManifestJSON) header() (*PGManifest, error) {
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
	return m, nil
}

// ParsePGManifest verifies the Manifest-Checksum of a backup_manifest and
// parses it. It is ParsePGManifestFrom over data.
func ParsePGManifest(data []byte) (*PGManifest, error) {
	return ParsePGManifestFrom(bytes.NewReader(data))
}

// ParsePGManifestFrom verifies the Manifest-Checksum of a backup_manifest
// read from r and parses it, one file entry at a time, so that neither the
// bytes nor their JSON form are held (see sealedReader). The checksum is
// the SHA-256 of every byte before the line that holds
// "Manifest-Checksum", which PostgreSQL writes as the last line; nothing
// is returned unless it verified. Versions 1 and 2 are accepted; a later
// version may change the format in ways we cannot check, so it is refused.
// A document with the Files member twice is refused: PostgreSQL never
// writes one, and json.Unmarshal would merge the second list into entries
// a stream no longer holds.
func ParsePGManifestFrom(r io.Reader) (*PGManifest, error) {
	s := newSealedReader(r, pgChecksumKey)
	o := newObjectStream(s)
	var (
		doc   pgManifestJSON // all but Files, decoded as json.Unmarshal would
		files pgFiles
	)
	o.members(func(key string) error {
		if strings.EqualFold(key, "Files") {
			return files.decode(o)
		}
		return o.member(key, &doc)
	})
	if err := s.verify("backup_manifest"); errors.Is(err, ErrChecksumMismatch) {
		return nil, err
	} else if err != nil {
		return nil, fmt.Errorf("parse backup_manifest: %w", err)
	}
	switch {
	case o.fatal != nil:
		return nil, fmt.Errorf("parse backup_manifest: %w", o.fatal)
	case o.field != nil:
		return nil, fmt.Errorf("parse backup_manifest: %w", o.field)
	}
	m, err := doc.header()
	if err != nil {
		return nil, err
	}
	switch {
	case !files.present:
		return nil, errors.New("parse backup_manifest: missing Files")
	case doc.WALRanges == nil:
		return nil, errors.New("parse backup_manifest: missing WAL-Ranges")
	case files.n > maxCount:
		return nil, fmt.Errorf("parse backup_manifest: %d files, more than the limit of %d", files.n, maxCount)
	case files.err != nil:
		return nil, fmt.Errorf("parse backup_manifest: %w", files.err)
	}
	m.Files = files.list
	if m.WALRanges, err = doc.walRanges(); err != nil {
		return nil, fmt.Errorf("parse backup_manifest: %w", err)
	}
	return m, nil
}

// walRanges checks the WAL-Ranges member, which the caller has checked is
// present, and returns it.
func (doc *pgManifestJSON) walRanges() ([]PGWALRange, error) {
	if n := len(*doc.WALRanges); n > maxCount {
		return nil, fmt.Errorf("%d WAL ranges, more than the limit of %d", n, maxCount)
	}
	ranges := make([]PGWALRange, 0, len(*doc.WALRanges))
	for i, jr := range *doc.WALRanges {
		switch {
		case jr.Timeline == nil || jr.Start == nil || jr.End == nil:
			return nil, fmt.Errorf("WAL range %d: want Timeline, Start-LSN and End-LSN", i)
		case *jr.Timeline == 0:
			return nil, fmt.Errorf("WAL range %d: timeline 0 does not exist", i)
		case *jr.Start > *jr.End:
			return nil, fmt.Errorf("WAL range %d: Start-LSN %s is after End-LSN %s", i, *jr.Start, *jr.End)
		}
		ranges = append(ranges, PGWALRange{Timeline: *jr.Timeline, Start: *jr.Start, End: *jr.End})
	}
	return ranges, nil
}

// pgFiles collects the Files member as it streams by: each entry checked
// and kept in its compact form, the first problem kept with its index.
type pgFiles struct {
	present bool // the member was there and not null
	seen    bool // the member was there at all
	n       int  // entries, counted past maxCount
	list    []PGFile
	err     error
}

func (fs *pgFiles) decode(o *objectStream) error {
	if fs.seen {
		return errors.New("the Files member appears twice")
	}
	fs.seen = true
	ok, _, err := o.arrayStart("Files")
	if err != nil || !ok {
		return err // null, or a type error already recorded
	}
	fs.present = true
	fs.list = []PGFile{}
	// Entries are gathered in blocks and copied once into an exact slice:
	// a slice grown by append copies 121,000 entries about five times
	// over, which profiles showed as a third of the parse.
	const blockLen = 4096
	var blocks [][]PGFile
	block := make([]PGFile, 0, blockLen)
	defer func() {
		if fs.list == nil {
			return
		}
		fs.list = make([]PGFile, 0, len(blocks)*blockLen+len(block))
		for _, b := range blocks {
			fs.list = append(fs.list, b...)
		}
		fs.list = append(fs.list, block...)
	}()
	var lastModified string
	for o.dec.More() {
		var jf pgFileJSON
		if err := o.decode(&jf); err != nil {
			return err
		}
		fs.n++
		if fs.n > maxCount {
			fs.list = nil // refused anyway; do not grow further
			continue
		}
		if fs.err != nil {
			continue
		}
		f, err := jf.file()
		if err != nil {
			fs.err = fmt.Errorf("file %d: %w", fs.n-1, err)
			fs.list = nil
			continue
		}
		// Files written in one second share their Last-Modified: keep
		// one copy of the run.
		if f.LastModified == lastModified {
			f.LastModified = lastModified
		}
		lastModified = f.LastModified
		if len(block) == blockLen {
			blocks = append(blocks, block)
			block = make([]PGFile, 0, blockLen)
		}
		block = append(block, f)
	}
	_, err = o.dec.Token() // the closing ']'
	return err
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
	alg, ok := pgChecksumAlgorithm(*jf.ChecksumAlgorithm)
	if !ok {
		return f, fmt.Errorf("%s: unknown Checksum-Algorithm %q", f.Path, *jf.ChecksumAlgorithm)
	}
	f.ChecksumAlgorithm = alg
	want := pgChecksumHexLen[alg]
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
