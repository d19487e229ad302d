package file_test

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/providers/providertest"
)

// otherUID and otherGID own the repository directory in the tests run as
// root: any ids do, since root can chown to ids no user has.
const (
	otherUID = 4242
	otherGID = 4243
)

// ownedDir makes an empty repository directory with mode and returns the
// owner that what the store creates in it must have: when the tests run as
// root, the directory is given to otherUID:otherGID, and the store must
// adopt that; otherwise the caller owns it and the store must change no
// owner (it cannot, and must not try).
func ownedDir(t *testing.T, mode fs.FileMode) (dir string, uid, gid int) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "repo")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	uid, gid = os.Geteuid(), os.Getegid()
	if uid == 0 {
		uid, gid = otherUID, otherGID
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	// After the chown, which may clear the setgid bit.
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir, uid, gid
}

// checkTree fails for every file or directory below root (root included)
// whose owner, group or mode is not the wanted one.
func checkTree(t *testing.T, root string, uid, gid int, fileMode, dirMode fs.FileMode) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fileMode
		if d.IsDir() {
			want = fs.ModeDir | dirMode
		}
		if got := fi.Mode() & (fs.ModeType | fs.ModePerm | fs.ModeSetgid); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ownerCheckingReader checks, when Put first reads it, that the upload's
// temporary file already has its final owner and mode: the object must not
// appear with another one, even for an instant or after a crash.
type ownerCheckingReader struct {
	r        *bytes.Reader
	t        *testing.T
	root     string
	uid, gid int
	mode     fs.FileMode
	checked  *bool
}

func (r ownerCheckingReader) Read(p []byte) (int, error) {
	if !*r.checked {
		*r.checked = true
		entries, err := os.ReadDir(filepath.Join(r.root, ".tmp"))
		if err != nil || len(entries) != 1 {
			r.t.Errorf("upload directory holds %v (%v), want one temporary file", entries, err)
		}
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil {
				r.t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if int(st.Uid) != r.uid || int(st.Gid) != r.gid || fi.Mode() != r.mode {
				r.t.Errorf("temporary file %s is %d:%d %v while being written, want %d:%d %v", e.Name(), st.Uid, st.Gid, fi.Mode(), r.uid, r.gid, r.mode)
			}
		}
	}
	return r.r.Read(p)
}

func (r ownerCheckingReader) Seek(off int64, whence int) (int64, error) { return r.r.Seek(off, whence) }

// putAll writes objects the ways Put can create files and directories:
// replacing, only if absent, at the root and several new levels deep.
func putAll(t *testing.T, s providers.Store, body func(key string) io.ReadSeeker) {
	t.Helper()
	for _, p := range []struct {
		key  string
		opts providers.PutOptions
	}{
		{"pgstow.json", providers.PutOptions{IfAbsent: true}},
		{"chunks/ab/cd/abcd", providers.PutOptions{IfAbsent: true}},
		{"chunks/ab/ef/abef", providers.PutOptions{IfAbsent: true}},
		{"locks/lease-1", providers.PutOptions{}},
		{"locks/lease-1", providers.PutOptions{}}, // replaced
	} {
		if err := s.Put(t.Context(), p.key, body(p.key), 4, p.opts); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRootAdoptsOwner: run as root in a repository directory owned by
// another user (the server's, for archive_command), everything the store
// creates belongs to that user, so that user can go on writing. Not as
// root, the same writes keep the caller's owner.
func TestRootAdoptsOwner(t *testing.T) {
	root, uid, gid := ownedDir(t, 0o700)
	if os.Geteuid() == 0 {
		// Left by an earlier version: Open gives it back to the owner.
		if err := os.Mkdir(filepath.Join(root, ".tmp"), 0o700); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Logf("not root: checking that objects keep the caller's owner %d:%d", uid, gid)
	}
	s := open(t, root)
	checked := false
	putAll(t, s, func(key string) io.ReadSeeker {
		r := bytes.NewReader([]byte("data"))
		if key != "chunks/ab/cd/abcd" {
			return r
		}
		return ownerCheckingReader{r: r, t: t, root: root, uid: uid, gid: gid, mode: 0o600, checked: &checked}
	})
	if !checked {
		t.Fatal("the temporary file was never checked")
	}
	checkTree(t, root, uid, gid, 0o600, 0o700)
	checkNoLeftovers(t, root)
	if err := s.Delete(t.Context(), "chunks/ab/cd/abcd"); err != nil {
		t.Fatal(err)
	}
}

// TestGroupShared: in a setgid repository directory with group
// permissions, objects get those group permissions whatever the umask (the
// server runs archive_command with umask 077), and the directory's group.
func TestGroupShared(t *testing.T) {
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })
	for _, tc := range []struct {
		name              string
		rootMode          fs.FileMode
		fileMode, dirMode fs.FileMode
	}{
		{"read-write", fs.ModeSetgid | 0o770, 0o660, fs.ModeSetgid | 0o770},
		{"read-only", fs.ModeSetgid | 0o750, 0o640, fs.ModeSetgid | 0o750},
		{"others never", fs.ModeSetgid | 0o775, 0o660, fs.ModeSetgid | 0o770},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, uid, gid := ownedDir(t, tc.rootMode)
			s := open(t, root)
			putAll(t, s, func(string) io.ReadSeeker { return bytes.NewReader([]byte("data")) })
			if err := os.Chmod(root, tc.dirMode); err != nil { // only the root may keep others' bits
				t.Fatal(err)
			}
			checkTree(t, root, uid, gid, tc.fileMode, tc.dirMode)
			checkNoLeftovers(t, root)
		})
	}
}

// TestConformanceAdjusted runs the conformance suite in a repository whose
// objects need another mode (setgid, group-shared) and, as root, another
// owner: the path where directories are made aside and renamed into place.
func TestConformanceAdjusted(t *testing.T) {
	providertest.Run(t, func(t *testing.T) providers.Store {
		root, _, _ := ownedDir(t, fs.ModeSetgid|0o770)
		return open(t, root)
	})
}

// TestSymlinkedTmpDir: when the store adjusts owners or modes (as root, or
// in a group-shared repository), an upload directory that the
// repository's owner replaced with a symlink is refused, and the
// symlink's target keeps its owner and mode: changing them by name would
// let that owner take or open up any directory on the machine.
func TestSymlinkedTmpDir(t *testing.T) {
	tests := []struct {
		name string
		mode fs.FileMode
	}{
		{name: "owner adopted", mode: 0o700},
		{name: "group shared", mode: 0o770 | fs.ModeSetgid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, _, _ := ownedDir(t, tt.mode)
			link := filepath.Join(root, ".tmp")
			_, unchanged := file.LinkToDir(t, link)
			_, err := file.Open(t.Context(), root)
			adjusts := os.Geteuid() == 0 || tt.mode&fs.ModeSetgid != 0
			switch {
			case adjusts && err == nil:
				t.Error("Open accepted a .tmp that is a symlink")
			case adjusts && !strings.Contains(err.Error(), link+" must be a directory, not a symlink"):
				t.Errorf("Open's error does not say that %s must be a directory: %v", link, err)
			case !adjusts && err != nil:
				t.Errorf("Open, changing no owner or mode: %v", err)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("the error is not one line: %v", err)
			}
			unchanged(t)
		})
	}
}
