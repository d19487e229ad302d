package restore

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// syncfsTypes are the local file systems whose sync_fs flushes all data
// and metadata, so that syncfs is as good as an fsync of every file.
var syncfsTypes = map[int64]string{
	unix.EXT4_SUPER_MAGIC:  "ext4", // also ext2 and ext3
	unix.XFS_SUPER_MAGIC:   "xfs",
	unix.BTRFS_SUPER_MAGIC: "btrfs",
	unix.TMPFS_MAGIC:       "tmpfs",
	0x2fc12fc1:             "zfs",
	unix.F2FS_SUPER_MAGIC:  "f2fs",
}

// syncfsSupported says whether syncfs on dir's file system is sound, and
// if not, why.
func syncfsSupported(dir *os.File) (bool, string) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false, fmt.Sprintf("cannot read the kernel version: %v", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	if !kernelAtLeast(release, 5, 8) {
		return false, "Linux " + release + " is older than 5.8, whose syncfs does not report write-back errors"
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &st); err != nil {
		return false, fmt.Sprintf("cannot read the file system type: %v", err)
	}
	if _, ok := syncfsTypes[int64(st.Type)]; !ok {
		return false, fmt.Sprintf("file system type %#x is not one known to flush everything on syncfs", st.Type)
	}
	return true, ""
}

// kernelAtLeast reports whether a release string such as
// "6.1.0-18-amd64" is at least major.minor.
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	minStr := parts[1]
	if i := strings.IndexFunc(minStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minStr = minStr[:i]
	}
	mnr, err2 := strconv.Atoi(minStr)
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > major || maj == major && mnr >= minor
}

// syncfs flushes dir's whole file system. Since Linux 5.8 it reports a
// write-back error that happened on it since dir was opened, which is why
// each destination's handle is opened before anything is written.
func syncfs(dir *os.File) error {
	return unix.Syncfs(int(dir.Fd()))
}
