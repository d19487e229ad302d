package file

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// dirInfo is a root directory's fs.FileInfo with the owner and mode under
// test, so that every combination can be checked without being root.
type dirInfo struct {
	mode     fs.FileMode
	uid, gid uint32
	noStat   bool // Sys returns no *syscall.Stat_t
}

func (d dirInfo) Name() string       { return "repo" }
func (d dirInfo) Size() int64        { return 4096 }
func (d dirInfo) Mode() fs.FileMode  { return fs.ModeDir | d.mode }
func (d dirInfo) ModTime() time.Time { return time.Time{} }
func (d dirInfo) IsDir() bool        { return true }
func (d dirInfo) Sys() any {
	if d.noStat {
		return nil
	}
	return &syscall.Stat_t{Uid: d.uid, Gid: d.gid}
}

// TestOwnershipOf pins the rule: only root changes owners, and only to the
// root directory's; only a setgid root directory with group permissions
// shares objects with its group; others never get a permission.
func TestOwnershipOf(t *testing.T) {
	private := ownership{fileMode: 0o600, dirMode: 0o700}
	tests := []struct {
		name       string
		root       dirInfo
		euid, egid int
		want       ownership
	}{
		{"non-root in its own directory", dirInfo{mode: 0o700, uid: 1000, gid: 1000}, 1000, 1000, private},
		{"non-root in another user's directory", dirInfo{mode: 0o777, uid: 101, gid: 104}, 1000, 1000, private},
		{"root in root's directory", dirInfo{mode: 0o700}, 0, 0, private},
		{"root in postgres's directory", dirInfo{mode: 0o700, uid: 101, gid: 104}, 0, 0,
			ownership{chown: true, uid: 101, gid: 104, fileMode: 0o600, dirMode: 0o700}},
		{"root in a directory of root's with another group", dirInfo{mode: 0o750, gid: 34}, 0, 0,
			ownership{chown: true, uid: 0, gid: 34, fileMode: 0o600, dirMode: 0o700}},
		{"group bits without setgid stay private", dirInfo{mode: 0o775, uid: 1000, gid: 1000}, 1000, 1000, private},
		{"setgid, group rwx", dirInfo{mode: fs.ModeSetgid | 0o770, uid: 1000, gid: 50}, 1000, 1000,
			ownership{chmod: true, fileMode: 0o660, dirMode: fs.ModeSetgid | 0o770}},
		{"setgid, group read-only", dirInfo{mode: fs.ModeSetgid | 0o750, uid: 1000, gid: 50}, 1000, 1000,
			ownership{chmod: true, fileMode: 0o640, dirMode: fs.ModeSetgid | 0o750}},
		{"setgid, others never", dirInfo{mode: fs.ModeSetgid | 0o777, uid: 1000, gid: 50}, 1000, 1000,
			ownership{chmod: true, fileMode: 0o660, dirMode: fs.ModeSetgid | 0o770}},
		{"setgid without group bits", dirInfo{mode: fs.ModeSetgid | 0o700, uid: 1000, gid: 50}, 1000, 1000, private},
		{"root in a shared directory", dirInfo{mode: fs.ModeSetgid | 0o770, uid: 101, gid: 50}, 0, 0,
			ownership{chown: true, uid: 101, gid: 50, chmod: true, fileMode: 0o660, dirMode: fs.ModeSetgid | 0o770}},
		{"no owner information", dirInfo{mode: fs.ModeSetgid | 0o770, noStat: true}, 0, 0, private},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ownershipOf(tt.root, tt.euid, tt.egid)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(ownership{})); diff != "" {
				t.Errorf("ownershipOf (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAdoptFails checks that a failed chown fails the upload with a message
// naming the owner and the fix, rather than leaving an object the
// repository's owner cannot use. A closed file and a missing directory
// make chown fail for root and for anyone else alike.
func TestAdoptFails(t *testing.T) {
	o := ownership{chown: true, uid: 4242, gid: 4243, fileMode: fileMode, dirMode: dirMode}
	f, err := os.CreateTemp(t.TempDir(), "f")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	const want = "to the repository directory's owner (uid 4242, gid 4243)"
	for name, err := range map[string]error{
		"file":      o.adoptFile(f),
		"directory": o.adoptDir(filepath.Join(t.TempDir(), "missing")),
	} {
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "run pgstow as that user") {
			t.Errorf("%s: error %v, want one containing %q and the fix", name, err, want)
		}
	}
}

// TestAdoptDirSymlink: adoptDir, which mkdir uses on the dir-* directories
// it makes in the upload directory, refuses a symlink put in their place
// and changes neither the owner nor the mode of its target.
func TestAdoptDirSymlink(t *testing.T) {
	link := filepath.Join(t.TempDir(), "dir-1")
	target, unchanged := LinkToDir(t, link)
	// chown to the caller's own ids works for any user, so both
	// changes would go through if adoptDir followed the link.
	o := ownership{chown: true, uid: os.Geteuid(), gid: os.Getegid(), chmod: true, dirMode: 0o770 | fs.ModeSetgid}
	err := o.adoptDir(link)
	if err == nil || !strings.Contains(err.Error(), link+" must be a directory, not a symlink") {
		t.Errorf("adoptDir on a symlink: %v", err)
	}
	unchanged(t)
	if err := o.adoptDir(target); err != nil {
		t.Fatalf("adoptDir on a directory: %v", err)
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode()&(fs.ModePerm|fs.ModeSetgid) != o.dirMode {
		t.Errorf("adoptDir did not set the mode of a directory: %v %v", fi.Mode(), err)
	}
}

// LinkToDir makes link a symlink to a new directory of mode 0751, and
// returns that directory and a check, for after the code under test met
// the link, that the directory kept its mode and owner. (Exported for
// the tests of package file_test.)
func LinkToDir(t *testing.T, link string) (target string, unchanged func(*testing.T)) {
	t.Helper()
	target = filepath.Join(t.TempDir(), "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(target, 0o751); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return target, func(t *testing.T) {
		t.Helper()
		after, err := os.Stat(target)
		if err != nil {
			t.Fatal(err)
		}
		if after.Mode() != before.Mode() {
			t.Errorf("the symlink's target changed mode from %v to %v", before.Mode(), after.Mode())
		}
		bst, ast := before.Sys().(*syscall.Stat_t), after.Sys().(*syscall.Stat_t)
		if ast.Uid != bst.Uid || ast.Gid != bst.Gid {
			t.Errorf("the symlink's target changed owner from %d:%d to %d:%d", bst.Uid, bst.Gid, ast.Uid, ast.Gid)
		}
	}
}
