package restore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestArchiving(t *testing.T) {
	tests := []struct {
		name       string
		conf, auto string
		want       string
	}{
		{"off by default", "archive_command = 'x %p'\n", "", ""},
		{"on", "archive_mode = on\narchive_command = '/usr/bin/pgstow wal-push --repo ''s3://b/p'' %p'  # archive\n", "", "/usr/bin/pgstow wal-push --repo 's3://b/p' %p"},
		{"auto.conf wins", "archive_mode = on\narchive_command = 'a'\n", "archive_mode = 'off'\n", ""},
		{"auto.conf command wins", "archive_mode = always\narchive_command = 'a'\n", "archive_command = 'b'\n", "b"},
		{"no equals sign", "archive_mode on\narchive_command 'c'\n", "", "c"},
		{"commented out", "#archive_mode = on\narchive_command = 'a'\n", "", ""},
		{"library", "archive_mode = on\narchive_library = 'basic_archive'\n", "", "basic_archive"},
		{"unterminated quote ignored", "archive_mode = on\narchive_command = 'a\n", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "postgresql.conf"), []byte(tt.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.auto != "" {
				if err := os.WriteFile(filepath.Join(dir, "postgresql.auto.conf"), []byte(tt.auto), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Archiving(dir)
			if err != nil || got != tt.want {
				t.Errorf("Archiving = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// FuzzConfLine: any line parses without panicking, and a parsed line has
// a key without blanks or '='.
func FuzzConfLine(f *testing.F) {
	for _, s := range []string{"archive_mode = on", "a 'b''c'", "x = 'y\\'z' # c", "= 1", "'", "k=", "  # c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		k, _, ok := confLine(line)
		if ok && (k == "" || strings.ContainsAny(k, " \t=")) {
			t.Fatalf("confLine(%q) key %q", line, k)
		}
	})
}
