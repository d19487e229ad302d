package pgdata

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"testing"
)

// FuzzDatabases feeds any bytes as pg_database and as pg_xact file 0000:
// Databases must not panic, and what it returns must be a list a restore
// can trust (sorted, unique, well-formed names).
func FuzzDatabases(f *testing.F) {
	live := func(oid uint32, name string) tup {
		return tup{xmin: frozenXid, infomask: heapXmaxInvalid, oid: oid, name: name}
	}
	xact := xactFiles(testXact)["0000"]
	f.Add(heapPage(live(1, "template1"), live(4, "template0"), live(5, "postgres")), xact)
	f.Add(heapPage(tup{xmin: xidCommitted, oid: 16384, name: "a"}, tup{xmin: frozenXid, xmax: xidCommitted, oid: 16385, name: "b"},
		tup{xmin: frozenXid, xmax: 3, infomask: heapXmaxIsMulti | heapHasNull, nullBits: 0xFF, oid: 16386, name: "c"}), xact)
	f.Add(append(heapPage(live(1, "a")), make([]byte, pageSize)...), []byte{})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, heap, xact0 []byte) {
		dbs, err := Databases(heap, func(name string) ([]byte, error) {
			if name == "0000" {
				return xact0, nil
			}
			return nil, fmt.Errorf("no pg_xact/%s: %w", name, fs.ErrNotExist)
		})
		if err != nil {
			if !errors.Is(err, ErrNotHeapFile) && !errors.Is(err, ErrAmbiguous) && !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Databases error %v wraps none of the documented errors", err)
			}
			return
		}
		if len(dbs) == 0 {
			t.Fatal("Databases returned no database and no error")
		}
		names := map[string]bool{}
		for i, d := range dbs {
			if i > 0 && dbs[i-1].OID >= d.OID {
				t.Fatalf("Databases = %v: not sorted by unique OID", dbs)
			}
			if d.OID == 0 || d.Name == "" || len(d.Name) >= nameDataLen || strings.IndexByte(d.Name, 0) >= 0 || names[d.Name] {
				t.Fatalf("Databases = %v: bad or repeated database %v", dbs, d)
			}
			names[d.Name] = true
		}
	})
}

// FuzzSystemIdentifier checks SystemIdentifier never panics and returns
// the first eight bytes when it accepts a file.
func FuzzSystemIdentifier(f *testing.F) {
	b := make([]byte, 296)
	binary.LittleEndian.PutUint64(b, 7311111111111111111)
	binary.LittleEndian.PutUint32(b[8:], 1300)
	f.Add(b)
	f.Add(b[:12])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := SystemIdentifier(data)
		if err != nil {
			if !errors.Is(err, ErrNotControlFile) {
				t.Fatalf("SystemIdentifier error %v does not wrap ErrNotControlFile", err)
			}
			return
		}
		if len(data) < 12 || id != binary.LittleEndian.Uint64(data) {
			t.Fatalf("SystemIdentifier(% x) = %d", data, id)
		}
	})
}

// FuzzRelationFile checks RelationFile never panics and accepts only
// paths of the documented shape, whose database part it returns.
func FuzzRelationFile(f *testing.F) {
	for _, p := range []string{"base/5/16384", "base/5/16384_vm.2", "PG_15_202209061/16390/16391", "base/5/PG_VERSION", "global/1262", "base/05/1"} {
		f.Add(false, p)
		f.Add(true, p)
	}
	f.Fuzz(func(t *testing.T, tablespace bool, path string) {
		db, ok := RelationFile(tablespace, path)
		if !ok {
			if db != 0 {
				t.Fatalf("RelationFile(%v, %q) = %d, false", tablespace, path, db)
			}
			return
		}
		parts := strings.Split(path, "/")
		if len(parts) != 3 || db == 0 || parts[1] != strconv.FormatUint(uint64(db), 10) {
			t.Fatalf("RelationFile(%v, %q) = %d, true", tablespace, path, db)
		}
		if tablespace != strings.HasPrefix(path, "PG_") || !tablespace && !strings.HasPrefix(path, "base/") {
			t.Fatalf("RelationFile(%v, %q) accepted a path of the other kind", tablespace, path)
		}
		if c := parts[2][0]; c < '1' || c > '9' || bytes.ContainsAny([]byte(parts[2]), "/ ") {
			t.Fatalf("RelationFile(%v, %q) accepted file name %q", tablespace, path, parts[2])
		}
	})
}
