package manifest

import (
	"strings"
	"testing"
	"time"
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

func TestNewBackupID(t *testing.T) {
	tests := []struct {
		t    time.Time
		want string
	}{
		{time.Date(2026, 11, 23, 20, 46, 51, 999_000_000, time.UTC), "20261123T204651Z"},
		{time.Date(2026, 11, 23, 21, 46, 51, 0, time.FixedZone("CET", 3600)), "20261123T204651Z"},
		{time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), "20000101T000000Z"},
	}
	for _, tt := range tests {
		got := NewBackupID(tt.t)
		if got != tt.want {
			t.Errorf("NewBackupID(%v) = %q, want %q", tt.t, got, tt.want)
		}
		if !ValidBackupID(got) {
			t.Errorf("ValidBackupID(%q) = false", got)
		}
	}
}

func TestValidBackupID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"20261123T204651Z", true},
		{"20240229T235959Z", true},
		{"20230229T000000Z", false}, // not a leap year
		{"20261323T204651Z", false},
		{"20261123T246051Z", false},
		{"20261123t204651Z", false},
		{"20261123T204651z", false},
		{"20261123T204651", false},
		{"20261123T204651Z0", false},
		{"2026-11-23T20:46:51Z", false},
		{"../../etc/passwd", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ValidBackupID(tt.id); got != tt.want {
			t.Errorf("ValidBackupID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestValidChunkID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{testChunkID, true},
		{strings.Repeat("0", 64), true},
		{strings.ToUpper(testChunkID), false},
		{testChunkID[:63], false},
		{testChunkID + "0", false},
		{testChunkID[:63] + "g", false},
		{"../" + testChunkID[3:], false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ValidChunkID(tt.id); got != tt.want {
			t.Errorf("ValidChunkID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}
