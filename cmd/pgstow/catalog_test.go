package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/manifest"
)

// TestShowCountsRegularFiles: show's "files" is what restore and
// PostgreSQL's backup_manifest count, regular files; directories and
// symlinks are counted apart, not added in (the manifest's Totals.Files
// counts every archive member).
func TestShowCountsRegularFiles(t *testing.T) {
	b := &manifest.Backup{
		ID: "20261123T204651Z",
		Files: []manifest.File{
			{Path: "base", Type: manifest.TypeDir},
			{Path: "base/1", Type: manifest.TypeDir},
			{Path: "base/1/1259", Type: manifest.TypeFile, Size: 8192},
			{Path: "global/pg_control", Type: manifest.TypeFile, Size: 8192},
			{Path: "PG_VERSION", Type: manifest.TypeFile, Size: 3},
			{Path: "pg_tblspc/16384", Type: manifest.TypeSymlink, LinkTarget: "/srv/ts"},
		},
		Totals: manifest.Totals{Files: 6},
	}
	e := showOf(b)
	if e.Files != 3 || e.Directories != 2 || e.Symlinks != 1 {
		t.Fatalf("show counts %d files, %d directories, %d symlinks; want 3, 2, 1", e.Files, e.Directories, e.Symlinks)
	}
	var out bytes.Buffer
	if err := printShow(&out, e); err != nil {
		t.Fatal(err)
	}
	if want := "3 regular files, 2 directories, 1 symlinks"; !strings.Contains(out.String(), want) {
		t.Errorf("show prints\n%s\nwant a line with %q", out.String(), want)
	}
}
