package pgtest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// modulePath identifies the repository root when searching upwards for go.mod.
const modulePath = "github.com/pgstow/pgstow"

// debianBinDir is where Debian's packages put the server binaries of a major.
func debianBinDir(major int) string {
	return fmt.Sprintf("/usr/lib/postgresql/%d/bin", major)
}

// debianClientMajor is the Debian-packaged major whose client tools stand in
// for those the npm builds lack (they ship only initdb, pg_ctl and postgres).
const debianClientMajor = 15

// clientFallbacks are the client programs that Bin takes from Debian's
// debianClientMajor when a cluster's own bindir lacks them. Tools whose output
// depends on the server version (pg_basebackup, pg_verifybackup, …) are
// deliberately absent: an older one refuses or misjudges a newer server.
var clientFallbacks = []string{"psql", "pgbench", "pg_isready"}

// defaultMajors are the majors tested unless PGSTOW_TEST_MAJORS says otherwise.
var defaultMajors = []int{15, 17, 18}

// Majors returns the PostgreSQL majors to test: the comma-separated list in
// the environment variable PGSTOW_TEST_MAJORS (for example "15,18"), or 15,
// 17 and 18. A malformed list panics, so a typo cannot silently test nothing.
func Majors() []int {
	env := strings.TrimSpace(os.Getenv("PGSTOW_TEST_MAJORS"))
	if env == "" {
		return slices.Clone(defaultMajors)
	}
	var majors []int
	for f := range strings.SplitSeq(env, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		m, err := strconv.Atoi(f)
		if err != nil || m < 10 {
			panic(fmt.Sprintf("pgtest: PGSTOW_TEST_MAJORS=%q: %q is not a PostgreSQL major version", env, f))
		}
		majors = append(majors, m)
	}
	if len(majors) == 0 {
		panic(fmt.Sprintf("pgtest: PGSTOW_TEST_MAJORS=%q names no major version", env))
	}
	return majors
}

var (
	binDirMu    sync.Mutex
	binDirCache = map[int]string{} // major → verified bindir
)

// ServerBinaryPath returns the directory holding initdb, pg_ctl and postgres
// of the given major, after checking that postgres runs (as the postgres user
// when we are root) and reports that major. The error says how to install
// them. Looked in, in order: $PGSTOW_PG<major>_BINDIR if set (and only
// there); Debian's /usr/lib/postgresql/<major>/bin for 15; the npm builds
// that scripts/install-deps.sh puts in .cache/pg/node_modules/pg<major> of
// the repository; Debian's directory for other majors.
func ServerBinaryPath(major int) (string, error) {
	binDirMu.Lock()
	defer binDirMu.Unlock()
	if dir, ok := binDirCache[major]; ok {
		return dir, nil
	}
	dir, err := findServerBinaries(major)
	if err != nil {
		return "", err
	}
	binDirCache[major] = dir
	return dir, nil
}

func findServerBinaries(major int) (string, error) {
	envName := fmt.Sprintf("PGSTOW_PG%d_BINDIR", major)
	var candidates []string
	if v := os.Getenv(envName); v != "" {
		candidates = []string{v}
	} else {
		if major == debianClientMajor {
			candidates = append(candidates, debianBinDir(major))
		}
		if root, err := repoRoot(); err == nil {
			candidates = append(candidates, npmBinDir(root, major))
		}
		if major != debianClientMajor {
			candidates = append(candidates, debianBinDir(major))
		}
	}
	hint := fmt.Sprintf("run scripts/install-deps.sh from the repository root (make test does; it installs "+
		"PostgreSQL %d from Debian and 17, 18 from npm into .cache/pg), or point %s at a bindir", debianClientMajor, envName)
	for _, dir := range candidates {
		if !hasServerBinaries(dir) {
			continue
		}
		if err := checkServerVersion(dir, major); err != nil {
			return "", fmt.Errorf("PostgreSQL %d server binaries in %s do not work: %w; %s", major, dir, err, hint)
		}
		return dir, nil
	}
	return "", fmt.Errorf("PostgreSQL %d server binaries (initdb, pg_ctl, postgres) not found in %s; %s",
		major, strings.Join(candidates, ", "), hint)
}

func npmBinDir(root string, major int) string {
	return filepath.Join(root, ".cache", "pg", "node_modules", fmt.Sprintf("pg%d", major), "native", "bin")
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// checkServerVersion runs "postgres --version" the way the tests will run the
// server, which catches binaries the postgres user cannot reach and npm
// builds whose library symlinks were never created.
func checkServerVersion(dir string, major int) error {
	cmd, err := serverCommand(filepath.Join(dir, "postgres"), "--version")
	if err != nil {
		return err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("postgres --version: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// "postgres (PostgreSQL) 17.10" or "postgres (PostgreSQL) 15.18 (Debian …)"
	want := fmt.Sprintf("(PostgreSQL) %d.", major)
	if !strings.Contains(string(out), want) {
		return fmt.Errorf("postgres --version says %q, want major %d", strings.TrimSpace(string(out)), major)
	}
	return nil
}

// repoRoot finds the checkout by walking up from the working directory (a
// test's is its package directory) to the go.mod of this module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isModuleRoot(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module " + modulePath + " above the working directory")
		}
		dir = parent
	}
}

func isModuleRoot(goMod string) bool {
	f, err := os.Open(goMod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == modulePath
		}
	}
	return false
}

// Bin returns the full path of a program of this cluster's major. The npm
// builds ship only the server programs, so psql, pgbench and pg_isready fall
// back to Debian's PostgreSQL 15 client tools, which talk to newer servers.
// Other missing programs return the would-be path in BinDir: running it
// fails with a clear "no such file".
func (c *Cluster) Bin(name string) string {
	p := filepath.Join(c.BinDir, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if slices.Contains(clientFallbacks, name) {
		if q := filepath.Join(debianBinDir(debianClientMajor), name); fileExists(q) {
			return q
		}
		if q, err := exec.LookPath(name); err == nil {
			return q
		}
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
