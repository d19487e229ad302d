package restore

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
	"github.com/pgstow/pgstow/repository"
)

// alwaysRestored are the databases a restore of chosen databases writes
// whatever is chosen: the templates CREATE DATABASE copies, and the
// database tools connect to first.
var alwaysRestored = []string{"template0", "template1", "postgres"}

// pgDatabasePath is pg_database's heap file in the data directory; its
// further segments are pgDatabasePath.1, .2…
const pgDatabasePath = "global/1262"

// chooseDatabases maps o.Databases to OIDs from the backup itself: it
// downloads pg_database's heap and the pg_xact files (a few chunks),
// reads the databases with pgdata.Databases, and returns the OIDs whose
// relation files are restored. An unknown name is refused, with the
// backup's databases listed. Nothing is written.
func chooseDatabases(ctx context.Context, repo *repository.Repository, p *plan, o Options) (map[uint32]bool, error) {
	b := p.b
	type seg struct {
		n   int
		idx int32
	}
	var heap []seg
	xactIdx := map[string]int32{}
	var spans []span
	for _, i := range p.members[p.base] {
		f := &b.Files[i]
		if f.Type != manifest.TypeFile {
			continue
		}
		key := memberKey(f)
		switch {
		case key == pgDatabasePath:
			heap = append(heap, seg{0, i})
		case strings.HasPrefix(key, pgDatabasePath+"."):
			n, err := strconv.Atoi(strings.TrimPrefix(key, pgDatabasePath+"."))
			if err != nil || n <= 0 {
				continue
			}
			heap = append(heap, seg{n, i})
		case strings.HasPrefix(key, "pg_xact/") && strings.Count(key, "/") == 1:
			xactIdx[strings.TrimPrefix(key, "pg_xact/")] = i
		default:
			continue
		}
		if f.Size > 0 {
			spans = append(spans, span{file: i, start: f.Offset, end: f.Offset + f.Size})
		}
	}
	if len(heap) == 0 {
		return nil, fmt.Errorf("the backup has no %s (pg_database), so its databases cannot be told apart", pgDatabasePath)
	}
	slices.SortFunc(spans, func(x, y span) int { return cmp.Compare(x.start, y.start) })
	slices.SortFunc(heap, func(x, y seg) int { return cmp.Compare(x.n, y.n) })

	held := make(heldFiles)
	all := make([][]span, len(b.Archives))
	all[p.base] = spans
	_, err := streamSpans(ctx, repo, p, o.Concurrency, all, nil,
		func(s span, off int64, data []byte) error {
			held.write(&b.Files[s.file], s, off, data)
			return nil
		},
		func(i int32) error {
			_, err := held.checked(&b.Files[i], i, b.Files[i].Path)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("read pg_database from the backup: %w", err)
	}
	var pgDatabase []byte
	for _, s := range heap {
		pgDatabase = append(pgDatabase, held[s.idx]...)
	}
	xact := func(name string) ([]byte, error) {
		i, ok := xactIdx[name]
		if !ok {
			return nil, fmt.Errorf("pg_xact/%s: %w", name, fs.ErrNotExist)
		}
		if data := held[i]; data != nil {
			return data, nil
		}
		return []byte{}, nil
	}
	list := o.listDatabases
	if list == nil {
		list = pgdata.Databases
	}
	dbs, err := list(pgDatabase, xact)
	if err != nil {
		return nil, fmt.Errorf("read pg_database from the backup: %w", err)
	}
	byName := make(map[string]uint32, len(dbs))
	names := make([]string, 0, len(dbs))
	for _, d := range dbs {
		byName[d.Name] = d.OID
		names = append(names, d.Name)
	}
	slices.Sort(names)
	keep := make(map[uint32]bool)
	for _, n := range o.Databases {
		oid, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("database %q is not in the backup, which has %s", n, strings.Join(names, ", "))
		}
		keep[oid] = true
	}
	for _, n := range alwaysRestored {
		if oid, ok := byName[n]; ok {
			keep[oid] = true
		}
	}
	var chosen []string
	for _, d := range dbs {
		if keep[d.OID] {
			chosen = append(chosen, d.Name+"="+strconv.FormatUint(uint64(d.OID), 10))
		}
	}
	o.Log.Info("restoring chosen databases; the others' relation files become placeholders", "databases", strings.Join(chosen, ", "))
	return keep, nil
}

// relMapFile is the relation mapper's file in each database directory:
// where the database's mapped catalogs (pg_class, pg_attribute, their
// indexes…) are stored.
const relMapFile = "pg_filenode.map"

// placeholderDB reports whether path (as pgdata.RelationFile takes it)
// is made a placeholder when its database is not restored, and which
// database it belongs to: the relation files, and the relation map. With
// the backup's map, a connection to the database would find its catalogs
// through it, read their zeroed pages, and PANIC the whole server
// ("could not open critical system index"), as every autovacuum worker
// that visits the database would too. A zeroed map is refused first, with
// a FATAL for that connection only ("relation mapping file … contains
// invalid data"), and DROP DATABASE never reads it. The database's
// PG_VERSION stays the backup's: a connection checks it before the map.
func placeholderDB(tablespace bool, path string) (uint32, bool) {
	if dir, ok := strings.CutSuffix(path, "/"+relMapFile); ok {
		// The map sits beside its database's relation files: ask
		// about a relation file of that directory.
		return pgdata.RelationFile(tablespace, dir+"/1")
	}
	return pgdata.RelationFile(tablespace, path)
}
