package file

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/providers"
)

// FuzzValidateKey checks that every key providers.ValidateKey accepts maps
// to a path strictly inside the root that maps back to the same key, so no
// key can reach outside the repository, and that rejected keys map to
// nothing.
func FuzzValidateKey(f *testing.F) {
	for _, key := range []string{
		"a", "a/b", "a/../b", "../a", "a/..", "/a", "a/", "a//b", ".", "..", "...", "a/./b",
		".tmp", ".tmp/x", ".tmpx", "a\x00b", "a\\..\\b", "ü/日本", "a b/c+d%2F",
	} {
		f.Add(key)
	}
	const root = "/srv/repo"
	f.Fuzz(func(t *testing.T, key string) {
		p, err := keyPath(root, key)
		if providers.ValidateKey(key) != nil {
			if err == nil {
				t.Fatalf("key %q rejected by ValidateKey maps to %q", key, p)
			}
			return
		}
		if err != nil {
			if key == tmpDir || strings.HasPrefix(key, tmpDir+"/") {
				return
			}
			t.Fatalf("valid key %q rejected: %v", key, err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			t.Fatalf("key %q maps to %q, not below %s: %v", key, p, root, err)
		}
		if rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
			t.Fatalf("key %q maps to %q, outside %s", key, p, root)
		}
		if filepath.ToSlash(rel) != key {
			t.Fatalf("key %q maps to %q, which names key %q", key, p, rel)
		}
		if strings.HasPrefix(p, filepath.Join(root, tmpDir)+"/") {
			t.Fatalf("key %q maps into the upload directory: %q", key, p)
		}
	})
}
