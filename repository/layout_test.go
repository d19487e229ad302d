package repository

import (
	"strings"
	"testing"
)

const testChunkID = "3f2a9c0d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10"

func TestKeys(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"repo", RepoKey, "pgstow.json"},
		{"chunk", ChunkKey(testChunkID), "chunks/3f/" + testChunkID},
		{"wal segment", WALKey("000000010000000000000003"), "wal/00000001/000000010000000000000003.lz4"},
		{"history", WALKey("00000002.history"), "wal/00000002/00000002.history.lz4"},
		{"backup manifest", BackupManifestKey("20261123T204651Z"), "backups/20261123T204651Z/manifest.json"},
		{"pg manifest", PGManifestKey("20261123T204651Z"), "backups/20261123T204651Z/backup_manifest"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s key = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	if !strings.HasPrefix(BackupManifestKey("20261123T204651Z"), BackupsPrefix) {
		t.Errorf("BackupManifestKey is not under BackupsPrefix %q", BackupsPrefix)
	}
}

func TestBackupIDFromKey(t *testing.T) {
	tests := []struct {
		key    string
		wantID string
		wantOK bool
	}{
		{"backups/20261123T204651Z/manifest.json", "20261123T204651Z", true},
		{BackupManifestKey("20000101T000000Z"), "20000101T000000Z", true},
		{"backups/20261123T204651Z/backup_manifest", "", false},
		{"backups/20261123T204651Z/", "", false},
		{"backups/20261123T204651Z", "", false},
		{"backups/x/manifest.json", "", false},
		{"backups/a/20261123T204651Z/manifest.json", "", false},
		{"backups//manifest.json", "", false},
		{"other/20261123T204651Z/manifest.json", "", false},
		{"backups/20261123T204651Z/manifest.json.tmp", "", false},
	}
	for _, tt := range tests {
		id, ok := BackupIDFromKey(tt.key)
		if id != tt.wantID || ok != tt.wantOK {
			t.Errorf("BackupIDFromKey(%q) = %q, %v, want %q, %v", tt.key, id, ok, tt.wantID, tt.wantOK)
		}
	}
}
