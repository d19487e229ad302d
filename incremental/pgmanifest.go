package incremental

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/pgstow/pgstow/manifest"
)

// RewritePGManifest copies the server's backup_manifest from src to dst
// with r.Edits applied (manifest.RewritePGManifest: the INCREMENTAL
// entries become the assembled files', backup_label's gets the rewritten
// label's size and checksum, and the Manifest-Checksum is recomputed). It
// refuses a manifest without an entry to edit: the assembled backup would
// not match it.
func (r *Result) RewritePGManifest(src io.Reader, dst io.Writer) error {
	done := make(map[string]bool, len(r.Edits))
	_, err := manifest.RewritePGManifest(src, dst, func(f manifest.PGFile) (manifest.PGFileEdit, error) {
		e, ok := r.Edits[f.Path]
		if ok {
			done[f.Path] = true
		}
		return e, nil
	})
	if err != nil {
		return err
	}
	if len(done) != len(r.Edits) {
		return fmt.Errorf("backup_manifest: %d of %d entries to rewrite not found: %s", len(r.Edits)-len(done), len(r.Edits), missing(r.Edits, done))
	}
	return nil
}

// missing names the edits not done, a few of them.
func missing(edits map[string]manifest.PGFileEdit, done map[string]bool) string {
	var names []string
	for k := range edits {
		if !done[k] {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	if len(names) > 5 {
		names = append(names[:5], "…")
	}
	return strings.Join(names, ", ")
}
