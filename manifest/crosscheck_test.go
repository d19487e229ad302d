package manifest

import (
	"fmt"
	"strings"
	"testing"
)

func TestCrossCheck(t *testing.T) {
	archives := []Archive{
		{Name: "base.tar"},
		{Name: "16384.tar", TablespaceOID: 16384},
	}
	crcLabel := uint32(0xE3069283)
	pg := func() *PGManifest {
		return &PGManifest{
			Version: 2,
			Files: []PGFile{
				{Path: "backup_label", Size: 9, ChecksumAlgorithm: "CRC32C", Checksum: "839206e3"},
				{Path: "global/pg_control", Size: 8192, ChecksumAlgorithm: "SHA256", Checksum: strings.Repeat("ab", 32)},
				{Path: "PG_VERSION", Size: 3},
				{Path: "empty", Size: 0, ChecksumAlgorithm: "CRC32C", Checksum: "00000000"},
				{Path: "pg_tblspc/16384/PG_17_202406281/5/16385", Size: 16384, ChecksumAlgorithm: "NONE"},
			},
		}
	}
	files := func() []File {
		return []File{
			{Path: "backup_label", Type: TypeFile, Size: 9, CRC32C: crcLabel},
			{Path: "global", Type: TypeDir},
			{Path: "global/pg_control", Type: TypeFile, Size: 8192, CRC32C: 7},
			{Path: "PG_VERSION", Type: TypeFile, Size: 3},
			{Path: "empty", Type: TypeFile},
			{Path: "pg_tblspc/16384", Type: TypeSymlink, LinkTarget: "/srv/ts1"},
			{Path: "pg_wal/000000010000000000000003", Type: TypeFile, Size: 16 << 20},
			{Path: "pg_wal/archive_status", Type: TypeDir},
			{Path: "backup_manifest", Type: TypeFile, Size: 1234},
			{Path: "PG_17_202406281", Type: TypeDir, Archive: 1},
			{Path: "PG_17_202406281/5/16385", Type: TypeFile, Size: 16384, Archive: 1},
		}
	}
	tests := []struct {
		name     string
		pg       func(*PGManifest)
		files    func([]File) []File
		wantErrs []string // nil means it must pass
	}{
		{name: "match"},
		{
			name:     "missing from the stream",
			files:    func(fs []File) []File { return append(fs[:3], fs[4:]...) },
			wantErrs: []string{"1 problem(s)", "PG_VERSION: missing from the stream"},
		},
		{
			name:     "size differs",
			files:    func(fs []File) []File { fs[2].Size = 8000; return fs },
			wantErrs: []string{"global/pg_control: size differs: manifest 8192, stream 8000"},
		},
		{
			name:     "CRC32C differs",
			files:    func(fs []File) []File { fs[0].CRC32C = 0x12345678; return fs },
			wantErrs: []string{"backup_label: CRC32C differs: manifest e3069283, stream 12345678"},
		},
		{
			name:     "bad CRC32C in manifest",
			pg:       func(m *PGManifest) { m.Files[3].Checksum = "xyz" },
			wantErrs: []string{"empty: parse CRC32C checksum"},
		},
		{
			name:     "not in the manifest",
			files:    func(fs []File) []File { return append(fs, File{Path: "postmaster.pid", Type: TypeFile, Size: 10}) },
			wantErrs: []string{"postmaster.pid: in the stream but not in the manifest"},
		},
		{
			name: "tablespace file under the wrong oid",
			pg:   func(m *PGManifest) { m.Files[4].Path = "pg_tblspc/16385/PG_17_202406281/5/16385" },
			wantErrs: []string{
				"2 problem(s)",
				"pg_tblspc/16384/PG_17_202406281/5/16385: in the stream but not in the manifest",
				"pg_tblspc/16385/PG_17_202406281/5/16385: missing from the stream",
			},
		},
		{
			name: "pg_wal is skipped only in the main archive",
			files: func(fs []File) []File {
				return append(fs, File{Path: "pg_wal/x", Type: TypeFile, Archive: 1})
			},
			wantErrs: []string{"pg_tblspc/16384/pg_wal/x: in the stream but not in the manifest"},
		},
		{
			name:     "twice in the stream",
			files:    func(fs []File) []File { return append(fs, fs[3]) },
			wantErrs: []string{"PG_VERSION: twice in the stream"},
		},
		{
			name:     "twice in the manifest",
			pg:       func(m *PGManifest) { m.Files = append(m.Files, m.Files[2]) },
			wantErrs: []string{"1 problem(s)", "PG_VERSION: listed twice in the manifest"},
		},
		{
			name:     "archive index out of range",
			files:    func(fs []File) []File { fs[3].Archive = 5; return fs },
			wantErrs: []string{"2 problem(s)", "PG_VERSION: archive index 5 out of range", "PG_VERSION: missing from the stream"},
		},
		{
			name: "many problems",
			pg: func(m *PGManifest) {
				for i := range 15 {
					m.Files = append(m.Files, PGFile{Path: fmt.Sprintf("base/1/%d", i), Size: 1})
				}
			},
			wantErrs: []string{"15 problem(s)", "base/1/0: missing from the stream", "base/1/9: missing", "; and 5 more"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, fs := pg(), files()
			if tt.pg != nil {
				tt.pg(m)
			}
			if tt.files != nil {
				fs = tt.files(fs)
			}
			err := CrossCheck(m, fs, archives)
			if tt.wantErrs == nil {
				if err != nil {
					t.Fatalf("CrossCheck: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CrossCheck succeeded, want an error")
			}
			for _, want := range tt.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("CrossCheck error = %q, want it to contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "base/1/10") {
				t.Errorf("CrossCheck error lists more than %d problems: %q", maxReported, err)
			}
		})
	}
	if err := CrossCheck(nil, nil, nil); err == nil {
		t.Error("CrossCheck(nil, ...) succeeded")
	}
}
