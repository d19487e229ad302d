package file

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// renameDir moves a prepared directory into place only if nothing is
// there (EEXIST otherwise). Replacing an empty directory, which a plain
// rename does, would pull it from under a concurrent Put that has just
// resolved it as the parent of its own rename, which then fails with
// ENOENT. File systems without RENAME_NOREPLACE get the plain rename.
func renameDir(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return os.Rename(from, to)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
