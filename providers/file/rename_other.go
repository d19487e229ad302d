//go:build !linux

package file

import "os"

// renameDir moves a prepared directory into place; where the system has
// no rename that refuses to replace, a plain rename, which replaces only
// an empty directory (see the Linux version).
func renameDir(from, to string) error { return os.Rename(from, to) }
