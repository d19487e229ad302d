package manifest

import (
	"strings"
	"testing"
	"time"
)

const testChunkID = "3f2a9c0d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10"

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
