package incremental

import (
	"bytes"
	"hash/crc32"
	"slices"
	"testing"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
)

// fuzzPaths are the member paths FuzzCollector picks from: each kind the
// Collector tells apart, in the data directory's archive and a
// tablespace's.
var fuzzPaths = []struct {
	path       string
	tablespace bool
}{
	{"base/1/INCREMENTAL.100", false},
	{"global/INCREMENTAL.1262_vm", false},
	{"PG_17_202406281/5/INCREMENTAL.7.1", true},
	{"base/1/100", false},
	{"PG_17_202406281/5/7_fsm", true},
	{"backup_label", false},
	{"base/1/INCREMENTAL.pg_filenode.map", false}, // not a relation: an ordinary file
	{"backup_label", true},                        // not the label in a tablespace
}

// writeSplit feeds data to o in the pieces splits says (each byte a
// piece's length, 0 an empty write; the last piece takes the rest).
func writeSplit(o chunker.MemberObserver, data, splits []byte) {
	for _, s := range splits {
		k := min(int(s), len(data))
		o.Write(data[:k])
		data = data[k:]
	}
	o.Write(data)
}

// refBlockCRCs is the CRC32C of each block of data, computed directly.
func refBlockCRCs(data []byte, bs int) manifest.BlockCRCs {
	var out manifest.BlockCRCs
	for len(data) > 0 {
		k := min(bs, len(data))
		out = append(out, crc32.Checksum(data[:k], manifest.Castagnoli))
		data = data[k:]
	}
	return out
}

// FuzzCollector feeds the Collector one member of any path kind and
// content, cut into writes of any sizes, then a well-formed INCREMENTAL
// member through the same observer. It must never panic; it must accept
// an INCREMENTAL member exactly when pgdata accepts the whole content,
// and then hold its header and the images' CRCs; it must record a
// relation file's block CRCs and keep backup_label as sent. The second
// member checks that nothing of the first leaks into it.
func FuzzCollector(f *testing.F) {
	good := incrFile(incrSpec{blocks: []uint32{1, 3}, trunc: 5, tag: "good"})
	f.Add(uint8(0), good, []byte{1, 11, 3, 200})
	f.Add(uint8(1), incrFile(incrSpec{trunc: 2}), []byte{})
	f.Add(uint8(2), incrFile(incrSpec{blocks: []uint32{63}, trunc: 64}), []byte{0, 12, 4})
	f.Add(uint8(0), good[:20], []byte{5})
	f.Add(uint8(0), append(bytes.Clone(good), 1), []byte{})
	f.Add(uint8(3), blocksOf("r", 3), []byte{100, 0, 255})
	f.Add(uint8(4), []byte("short"), []byte{2})
	f.Add(uint8(5), []byte("START WAL LOCATION: 0/2\nINCREMENTAL FROM LSN: 0/1\n"), []byte{7})
	f.Add(uint8(6), []byte("x"), []byte{})
	f.Fuzz(func(t *testing.T, sel uint8, content, splits []byte) {
		fp := fuzzPaths[int(sel)%len(fuzzPaths)]
		c := NewCollector(testBS, testRelseg)
		newObs := c.Observer(0, fp.tablespace)
		o := newObs(fp.path, 0, 512, int64(len(content)))
		var rec manifest.File
		if o != nil {
			writeSplit(o, content, splits)
			o.Close(&rec)
		}
		// A well-formed member after it, as the next of the archive.
		next := "base/1/INCREMENTAL.200"
		if fp.tablespace {
			next = "PG_17_202406281/5/INCREMENTAL.200"
		}
		o2 := newObs(next, 1024, 1536, int64(len(good)))
		writeSplit(o2, good, splits)
		o2.Close(&manifest.File{})

		ms := c.Members(0)
		target, isIncr := pgdata.IncrementalName(fp.path)
		isIncr = isIncr && pgdata.IsRelationFile(fp.tablespace, target)
		isLabel := fp.path == labelPath && !fp.tablespace
		want := 1
		if isIncr || isLabel {
			want = 2
		}
		if len(ms) != want {
			t.Fatalf("%d members recorded, want %d", len(ms), want)
		}
		last := ms[len(ms)-1]
		if last.err != nil || last.Target != "base/1/200" && last.Target != "PG_17_202406281/5/200" ||
			!slices.Equal(last.header.Blocks, []uint32{1, 3}) || !slices.Equal(last.imageCRCs, refBlockCRCs(good[testBS:], testBS)) {
			t.Fatalf("the well-formed member after %s: %+v", fp.path, last)
		}
		switch {
		case isIncr:
			m := ms[0]
			h, err := pgdata.ParseIncrementalHeader(content, testBS, testRelseg)
			if err == nil {
				err = h.CheckSize(int64(len(content)))
			}
			if (err == nil) != (m.err == nil) {
				t.Fatalf("collector error %v, pgdata's %v", m.err, err)
			}
			if err != nil {
				return
			}
			if !slices.Equal(m.header.Blocks, h.Blocks) || m.header.HeaderLen != h.HeaderLen || m.header.TruncationBlocks != h.TruncationBlocks {
				t.Fatalf("header %+v, pgdata's %+v", m.header, h)
			}
			if want := refBlockCRCs(content[h.HeaderLen:], testBS); !slices.Equal(m.imageCRCs, want) {
				t.Fatalf("image CRCs %v, want %v", m.imageCRCs, want)
			}
		case isLabel:
			m := ms[0]
			if len(content) > maxLabelSize {
				if m.err == nil {
					t.Fatalf("a backup_label of %d bytes accepted", len(content))
				}
			} else if m.err != nil || !bytes.Equal(m.label, content) {
				t.Fatalf("backup_label kept as %q (%v), sent %q", m.label, m.err, content)
			}
		case pgdata.IsRelationFile(fp.tablespace, fp.path):
			if want := refBlockCRCs(content, testBS); !slices.Equal(rec.BlockCRC32C, want) {
				t.Fatalf("block CRCs %v, want %v", rec.BlockCRC32C, want)
			}
		default:
			if o != nil {
				t.Fatalf("%s observed", fp.path)
			}
		}
	})
}
