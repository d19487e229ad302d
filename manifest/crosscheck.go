package manifest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxReported is how many problems CrossCheck spells out; the rest are
// only counted, so a badly broken backup does not produce a megabyte error.
const maxReported = 10

// CrossCheck compares the regular files we read from the tar streams with
// the server's backup_manifest: every file the server listed must be there
// with the same size (and the same CRC32C when the manifest has one), and
// every file we got must be listed. It catches a stream that was cut or
// misparsed before the backup is committed. Files under pg_wal/ and
// backup_manifest itself are skipped, since PostgreSQL does not list them.
// Memory is one map entry per manifest file.
func CrossCheck(pg *PGManifest, files []File, archives []Archive) error {
	if pg == nil {
		return errors.New("cross-check with backup_manifest: nil manifest")
	}
	var p problems
	type entry struct {
		i    int // index into pg.Files
		seen bool
	}
	byPath := make(map[string]entry, len(pg.Files))
	for i, f := range pg.Files {
		if _, dup := byPath[f.Path]; dup {
			p.addf("%s: listed twice in the manifest", f.Path)
			continue
		}
		byPath[f.Path] = entry{i: i}
	}
	for _, f := range files {
		if f.Type != TypeFile {
			continue
		}
		if f.Archive < 0 || f.Archive >= len(archives) {
			p.addf("%s: archive index %d out of range (%d archives)", f.Path, f.Archive, len(archives))
			continue
		}
		path, skip := pgPath(f.Path, archives[f.Archive].TablespaceOID)
		if skip {
			continue
		}
		e, ok := byPath[path]
		if !ok {
			p.addf("%s: in the stream but not in the manifest", path)
			continue
		}
		if e.seen {
			p.addf("%s: twice in the stream", path)
			continue
		}
		e.seen = true
		byPath[path] = e
		pf := &pg.Files[e.i]
		if pf.Size != f.Size {
			p.addf("%s: size differs: manifest %d, stream %d", path, pf.Size, f.Size)
			continue
		}
		if pf.ChecksumAlgorithm == "CRC32C" {
			crc, err := PGChecksumCRC32C(pf.Checksum)
			if err != nil {
				p.addf("%s: %v", path, err)
			} else if crc != f.CRC32C {
				p.addf("%s: CRC32C differs: manifest %08x, stream %08x", path, crc, f.CRC32C)
			}
		}
	}
	// Walk the manifest's own order so the report is deterministic.
	for i, f := range pg.Files {
		if e := byPath[f.Path]; e.i == i && !e.seen {
			p.addf("%s: missing from the stream", f.Path)
		}
	}
	return p.err()
}

// pgPath maps a tar member name to the path backup_manifest uses, and says
// whether PostgreSQL leaves the file out of its manifest.
func pgPath(path string, tablespaceOID uint32) (string, bool) {
	if tablespaceOID != 0 {
		return "pg_tblspc/" + strconv.FormatUint(uint64(tablespaceOID), 10) + "/" + path, false
	}
	return path, path == pgManifestName || strings.HasPrefix(path, "pg_wal/")
}

// problems collects the first maxReported problems and counts the rest.
type problems struct {
	list  []string
	total int
}

func (p *problems) addf(format string, args ...any) {
	p.total++
	if len(p.list) < maxReported {
		p.list = append(p.list, fmt.Sprintf(format, args...))
	}
}

func (p *problems) err() error {
	if p.total == 0 {
		return nil
	}
	msg := strings.Join(p.list, "; ")
	if more := p.total - len(p.list); more > 0 {
		msg += fmt.Sprintf("; and %d more", more)
	}
	return fmt.Errorf("stream does not match backup_manifest: %d problem(s): %s", p.total, msg)
}
