package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/manifest"
)

// TestBackupTypeShown: list --json and show say whether a backup is full
// or incremental, and for an incremental its parent and what the server
// sent against what the backup describes.
func TestBackupTypeShown(t *testing.T) {
	full := &manifest.Backup{ID: "20261123T204651Z", FormatVersion: manifest.FormatVersion, Totals: manifest.Totals{RawBytes: 1 << 30}}
	incr := &manifest.Backup{ID: "20261124T204651Z", FormatVersion: manifest.FormatVersionIncremental, Totals: manifest.Totals{RawBytes: 1 << 30},
		Incremental: &manifest.Incremental{Parent: full.ID, SentBytes: 10 << 20, IncrementalFiles: 7, ChangedBlocks: 99}}
	for _, tc := range []struct {
		b        *manifest.Backup
		typ      string
		short    string
		showLine string
	}{
		{full, "full", "full", "full\n"},
		{incr, "incremental", "incr", "incremental from 20261123T204651Z (the server sent 10.0 MiB of the 1.0 GiB it describes; 7 files as changed blocks, 99 blocks)"},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			e := entryOf(tc.b)
			var m map[string]any
			raw, _ := json.Marshal(e)
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			if m["type"] != tc.typ || m["format_version"] != tc.b.FormatVersion || (m["incremental"] != nil) != (tc.b.Incremental != nil) {
				t.Errorf("--json: %s", raw)
			}
			if tc.b.Incremental != nil {
				inc := m["incremental"].(map[string]any)
				if inc["parent"] != full.ID || inc["sent_bytes"] != float64(10<<20) {
					t.Errorf("--json incremental: %v", inc)
				}
			}
			if got := shortType(e); got != tc.short {
				t.Errorf("TYPE column %q, want %q", got, tc.short)
			}
			var out bytes.Buffer
			if err := printShow(&out, showOf(tc.b)); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tc.showLine) {
				t.Errorf("show prints\n%s\nwant %q", out.String(), tc.showLine)
			}
		})
	}
}

// TestBackupTypeFlags: a wrong --type or --full-every is a usage error.
func TestBackupTypeFlags(t *testing.T) {
	for _, args := range [][]string{
		{"backup", "--repo", "file:///nonexistent", "--type", "differential"},
		{"backup", "--repo", "file:///nonexistent", "--full-every", "0s"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr, func(string) string { return "" }); code != exitUsage {
			t.Errorf("%v: exit %d, want %d\n%s", args, code, exitUsage, stderr.String())
		}
	}
}
