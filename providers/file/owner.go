package file

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// ownership is what the store gives each file and directory it creates,
// decided once at Open from the repository root directory. A repository is
// usually shared by several OS users: PostgreSQL's archive_command and
// restore_command run as the server's user, while backups often run from
// root's cron. Without this, a root-run backup would leave root-owned
// objects (0600) in root-owned directories (0700), and the server user's
// next wal-push would fail on them until someone ran chown -R.
type ownership struct {
	// chown is set when running as root in a repository whose root
	// directory belongs to another user or group: what root creates then
	// takes uid and gid, so that the repository stays its owner's.
	chown    bool
	uid, gid int
	// chmod is set in a group-shared repository (a setgid root directory
	// with group permissions): fileMode and dirMode are then set
	// explicitly, because the creating process's umask would otherwise
	// decide, and PostgreSQL runs archive_command with umask 077.
	chmod    bool
	fileMode fs.FileMode
	dirMode  fs.FileMode
}

// ownershipOf decides the ownership rule for a repository whose root
// directory is root, for a process with effective ids euid and egid.
//
// Group sharing is opted into with the setgid bit, the usual Unix way to
// say that a directory's files belong to its group: only then do objects
// get the root directory's group permissions (read and write for files,
// all three for directories). A plain mkdir gives 0755 or 0775, and
// widening backups to the group on that alone would expose their data to
// a group nobody chose. Others never get any permission.
func ownershipOf(root fs.FileInfo, euid, egid int) ownership {
	o := ownership{fileMode: fileMode, dirMode: dirMode}
	st, ok := root.Sys().(*syscall.Stat_t)
	if !ok {
		return o
	}
	if group := root.Mode().Perm() & 0o070; root.Mode()&fs.ModeSetgid != 0 && group != 0 {
		o.chmod = true
		o.fileMode |= group & 0o060
		o.dirMode |= group | fs.ModeSetgid
	}
	if euid == 0 && (int(st.Uid) != euid || int(st.Gid) != egid) {
		o.chown, o.uid, o.gid = true, int(st.Uid), int(st.Gid)
	}
	return o
}

// adjusts reports whether anything created needs changing after creation.
func (o ownership) adjusts() bool { return o.chown || o.chmod }

// adoptFile gives a newly created file, still private to the store (a
// temporary file not yet renamed into place), its owner and mode.
func (o ownership) adoptFile(f *os.File) error {
	if o.chown {
		if err := f.Chown(o.uid, o.gid); err != nil && !o.alreadyOwned(f.Stat()) {
			return fmt.Errorf("give %s to the repository directory's owner (uid %d, gid %d): %w; run pgstow as that user", f.Name(), o.uid, o.gid, err)
		}
	}
	if o.chmod {
		if err := f.Chmod(o.fileMode); err != nil {
			return fmt.Errorf("set the group permissions of the shared repository on %s: %w", f.Name(), err)
		}
	}
	return nil
}

// adoptDir gives a directory its owner and mode. The chown comes first:
// on some systems changing a directory's owner clears its setgid bit, which
// the chmod then sets again.
//
// Both are done through a handle opened without following a symlink:
// the repository's owner can replace the directory with a symlink at any
// time, and root changing by name would then give away, or open up, the
// symlink's target. The handle also rules out a swap between a check and
// the change.
func (o ownership) adoptDir(dir string) error {
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
		return notDirError(dir, err)
	}
	if err == nil {
		defer f.Close()
	}
	if o.chown {
		if err == nil {
			err = f.Chown(o.uid, o.gid)
		}
		if err != nil && (f == nil || !o.alreadyOwned(f.Stat())) {
			return fmt.Errorf("give %s to the repository directory's owner (uid %d, gid %d): %w; run pgstow as that user", dir, o.uid, o.gid, err)
		}
		err = nil
	}
	if o.chmod {
		if err == nil {
			err = f.Chmod(o.dirMode)
		}
		if err != nil {
			return fmt.Errorf("set the group permissions of the shared repository on %s: %w", dir, err)
		}
	}
	return err
}

// notDirError says that dir, which the store adjusts, is not a real
// directory.
func notDirError(dir string, err error) error {
	return fmt.Errorf("%s must be a directory, not a symlink or a file (%w); remove it and pgstow creates it again", dir, err)
}

// alreadyOwned reports whether a file whose chown failed has the wanted
// owner anyway, as on file systems that report one owner for everything
// (vfat, some network mounts) and refuse to change it.
func (o ownership) alreadyOwned(fi fs.FileInfo, err error) bool {
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == o.uid && int(st.Gid) == o.gid
}

// differs reports whether an existing directory lacks the owner or mode
// the rule gives new ones.
func (o ownership) differs(fi fs.FileInfo) bool {
	if o.chmod && fi.Mode()&(fs.ModePerm|fs.ModeSetgid) != o.dirMode {
		return true
	}
	return o.chown && !o.alreadyOwned(fi, nil)
}

// isPermission reports errors that a reader of the repository (which may
// not write to it) should not fail on when opening it.
func isPermission(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}
