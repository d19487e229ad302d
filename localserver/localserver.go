// Package localserver starts a throw-away PostgreSQL server on a restored
// data directory and removes it again: the "give my CI job yesterday's
// production snapshot" half of pgstow. The server listens on loopback and
// a socket inside the directory only, lets local connections in without a
// password, and never archives WAL, so a copy can never write into the
// production repository or be reached from another host. Any user of this
// host can connect to it, as with any trust setup: it is for single-tenant
// machines such as CI runners.
package localserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgstow/pgstow/restore"
)

// StateFile marks a data directory as started by pgstow and records how to
// stop it. Discard refuses directories without it, so it can never remove
// a real cluster.
const StateFile = "pgstow-server.json"

// hbaFile replaces the backup's pg_hba.conf: trust, but only over the
// socket in the data directory and loopback.
const hbaFile = `# Written by pgstow restore --start for a throw-away server: local
# connections only, without a password. The backup's own file, if it had
# one, is pg_hba.conf.pgstow-orig.
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
host    all          all   ::1/128        trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
host    replication  all   ::1/128        trust
`

// Options configure Start.
type Options struct {
	// DataDir is the restored data directory, absolute.
	DataDir string
	// Major is the backup's PostgreSQL major version; the server
	// binaries must be of the same.
	Major int
	// BinDir holds pg_ctl and postgres; empty searches the usual places.
	BinDir string
	// Port to listen on 127.0.0.1; 0 picks a free one.
	Port int
	// RunAs is the OS user the server runs as when pgstow runs as root
	// (PostgreSQL refuses root); empty means "postgres".
	RunAs string
	// User and DBName go into the printed URI ("postgres" both by default).
	User, DBName string
	// KeepHBA keeps the backup's pg_hba.conf instead of trusting local
	// connections.
	KeepHBA bool
	// Tablespaces are the directories the restore wrote tablespaces into;
	// Discard removes them with the data directory.
	Tablespaces []string
	// WaitPromotion waits until recovery has ended (a recovery target with
	// action promote); WaitPause until replay has paused at the target.
	WaitPromotion, WaitPause bool
	// Probe, if set, is a command run as the server's OS user before the
	// start, to check that it can do what the server will ask of it
	// (restore_command reading the repository).
	Probe []string
	// Timeout bounds the wait for the server to accept connections and
	// finish recovery.
	Timeout time.Duration
	Log     *slog.Logger
}

// Server is a started throw-away server.
type Server struct {
	URI       string   `json:"uri"`
	Host      string   `json:"host"`
	Port      int      `json:"port"`
	User      string   `json:"user"`
	DBName    string   `json:"dbname"`
	DataDir   string   `json:"data_dir"`
	SocketDir string   `json:"socket_dir"`
	LogFile   string   `json:"log_file"`
	BinDir    string   `json:"bin_dir"`
	RunAs     string   `json:"run_as,omitempty"`
	Extra     []string `json:"tablespace_dirs,omitempty"`
}

// Start configures the restored directory for a local throw-away server,
// starts it and waits until it accepts connections as o.User (and, when
// asked, until recovery has reached its target).
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.User == "" {
		o.User = "postgres"
	}
	if o.DBName == "" {
		o.DBName = "postgres"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	bin, err := FindBinDir(ctx, o.Major, o.BinDir)
	if err != nil {
		return nil, err
	}
	cred, runAs, err := serverUser(o.RunAs)
	if err != nil {
		return nil, err
	}
	if cred != nil && cred.Uid == 0 {
		return nil, fmt.Errorf("--run-as %s: PostgreSQL refuses to run as root; name an unprivileged OS user", runAs)
	}
	// One deadline for starting, recovering and accepting connections.
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	s := &Server{Host: "127.0.0.1", User: o.User, DBName: o.DBName, DataDir: o.DataDir, SocketDir: o.DataDir,
		LogFile: filepath.Join(o.DataDir, logName), BinDir: bin, RunAs: runAs, Extra: o.Tablespaces}
	if n := len(s.SocketDir) + len("/.s.PGSQL.65535"); n > maxSocketPath {
		return nil, fmt.Errorf("the data directory path %s is too long for the server's socket inside it (%d bytes, at most %d); restore to a shorter path", o.DataDir, n, maxSocketPath)
	}
	// Everything is written while the directory is still root's (when
	// root): once the server's user owns it, that user could plant links.
	if err := prepare(o, s); err != nil {
		return nil, err
	}
	auto := filepath.Join(o.DataDir, "postgresql.auto.conf")
	orig, err := os.ReadFile(auto)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", auto, err)
	}
	if s.Port = o.Port; s.Port == 0 {
		if s.Port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(auto, settings(orig, s), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", auto, err)
	}
	s.URI = (&url.URL{Scheme: "postgresql", User: url.User(s.User), Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), Path: "/" + s.DBName}).String()
	// Recorded before the first start, so that Discard can clean up
	// after a server that failed to come up.
	if err := s.Save(); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := handOver(cred, append([]string{o.DataDir}, o.Tablespaces...)); err != nil {
			return nil, err
		}
		if len(o.Probe) > 0 {
			cmd := exec.CommandContext(ctx, o.Probe[0], o.Probe[1:]...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
			cmd.Dir = "/"
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("the server's OS user %s, which runs restore_command, cannot read the repository: %s; give it read access (and the credentials in its environment), or restore with --wal embed",
					runAs, strings.TrimSpace(string(out)))
			}
		}
	}
	// From here on the directory is the server user's: reach into it only
	// through root, which refuses links that lead out of it.
	dir, err := os.OpenRoot(o.DataDir)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	fail := func(err error) (*Server, error) {
		if _, serr := dir.Stat("postmaster.pid"); serr == nil {
			_ = pgCtl(context.WithoutCancel(ctx), cred, bin, "stop", "-D", o.DataDir, "-m", "immediate", "-w")
		}
		return nil, err
	}
	// A port picked here may be taken before the server binds it; pick
	// again then.
	for attempt := 0; ; attempt++ {
		from := fileSize(dir, logName)
		err = pgCtl(ctx, cred, bin, "start", "-D", o.DataDir, "-l", s.LogFile, "-w", "-t", strconv.Itoa(secondsLeft(ctx)))
		if err == nil {
			break
		}
		log := logSince(dir, from)
		if o.Port == 0 && attempt < 3 && strings.Contains(log, "could not bind") && ctx.Err() == nil {
			o.Log.Info("port taken meanwhile; trying another", "port", s.Port)
			if s.Port, err = freePort(); err != nil {
				return fail(err)
			}
			if err := dir.WriteFile("postgresql.auto.conf", settings(orig, s), 0o600); err != nil {
				return fail(fmt.Errorf("write %s: %w", auto, err))
			}
			s.URI = (&url.URL{Scheme: "postgresql", User: url.User(s.User), Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), Path: "/" + s.DBName}).String()
			continue
		}
		if strings.Contains(err.Error(), "could not start server") {
			// The server exited while pg_ctl -w waited (recovery
			// failed, the target cannot be reached): said in the same
			// words as when it stops after pg_ctl has returned.
			return fail(fmt.Errorf("start PostgreSQL on %s: the server stopped before it was ready (%w); the server log says: %s", o.DataDir, err, tail(log)))
		}
		return fail(fmt.Errorf("start PostgreSQL on %s: %w; the server log says: %s", o.DataDir, err, tail(log)))
	}
	if err := waitReady(ctx, s, o, dir); err != nil {
		return fail(err)
	}
	o.Log.Info("throw-away server ready", "uri", s.URI, "data_dir", o.DataDir, "log", s.LogFile)
	return s, nil
}

// logName is the server log, in the data directory.
const logName = "pgstow-server.log"

// maxSocketPath is what a Unix socket's path may hold (sun_path less its
// terminating NUL).
const maxSocketPath = 107

// secondsLeft is what remains of ctx's deadline, in whole seconds, for
// pg_ctl -t.
func secondsLeft(ctx context.Context) int {
	d, ok := ctx.Deadline()
	if !ok {
		return 3600
	}
	return max(1, int(time.Until(d).Seconds()))
}

// prepare makes sure the server can start from the directory: the
// configuration files a packaged installation keeps outside the data
// directory (Debian keeps them in /etc) exist, and pg_hba.conf lets local
// connections in.
func prepare(o Options, s *Server) error {
	dir := o.DataDir
	if _, err := os.Stat(filepath.Join(dir, "global", "pg_control")); err != nil {
		return fmt.Errorf("%s is not a complete data directory (no global/pg_control): %w", dir, err)
	}
	for name, body := range map[string]string{
		"postgresql.conf": "# Written by pgstow restore --start: the backup had no postgresql.conf (a packaged\n# installation keeps it elsewhere). pgstow's settings are in postgresql.auto.conf.\n",
		"pg_ident.conf":   "",
	} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				return fmt.Errorf("write %s: %w", p, err)
			}
		}
	}
	hba := filepath.Join(dir, "pg_hba.conf")
	_, err := os.Stat(hba)
	switch {
	case o.KeepHBA && err == nil:
		return nil
	case o.KeepHBA:
		return fmt.Errorf("--keep-hba: the backup has no pg_hba.conf (a packaged installation keeps it elsewhere); leave --keep-hba out")
	case err == nil:
		if _, err := os.Stat(hba + ".pgstow-orig"); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(hba, hba+".pgstow-orig"); err != nil {
				return fmt.Errorf("keep the backup's pg_hba.conf: %w", err)
			}
		}
	}
	if err := os.WriteFile(hba, []byte(hbaFile), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", hba, err)
	}
	return nil
}

// settings is the backup's postgresql.auto.conf with the throw-away
// server's settings after it: PostgreSQL reads that file last, so they win
// over the backup's own configuration. archive_mode is off so a copy never
// pushes WAL into the production repository; synchronous replication is
// off so that writes do not wait for production's standbys.
func settings(orig []byte, s *Server) []byte {
	var b strings.Builder
	b.Write(orig)
	if len(orig) > 0 && orig[len(orig)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString("# Added by pgstow restore --start: a throw-away local server.\n")
	for _, kv := range [][2]string{
		{"port", strconv.Itoa(s.Port)},
		{"listen_addresses", "'127.0.0.1'"},
		{"unix_socket_directories", restore.ConfQuote(s.SocketDir)},
		{"hba_file", restore.ConfQuote(filepath.Join(s.DataDir, "pg_hba.conf"))},
		{"ident_file", restore.ConfQuote(filepath.Join(s.DataDir, "pg_ident.conf"))},
		{"archive_mode", "off"},
		{"archive_command", "''"},
		{"ssl", "off"},
		{"primary_conninfo", "''"},
		{"synchronous_standby_names", "''"},
		{"hot_standby", "on"},
		{"logging_collector", "off"},
		{"log_destination", "'stderr'"},
	} {
		b.WriteString(kv[0] + " = " + kv[1] + "\n")
	}
	return []byte(b.String())
}

// waitReady connects as the URI says until the server accepts the
// connection, then waits for the recovery target if asked.
func waitReady(ctx context.Context, s *Server, o Options, dir *os.Root) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=5", s.Host, s.Port, quoteDSN(s.User), quoteDSN(s.DBName))
	var last error
	for {
		state, err := recoveryState(ctx, dsn)
		switch {
		case err == nil && o.WaitPromotion && state != "promoted":
			last = errors.New("recovery has not reached its target yet")
		case err == nil && o.WaitPause && state != "paused":
			last = errors.New("replay has not paused at the target yet")
		case err == nil:
			return nil
		default:
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (pgErr.Code == "28000" || pgErr.Code == "3D000" || pgErr.Code == "28P01") {
				// The role or database does not exist in the backup, or
				// the backup's pg_hba.conf (--keep-hba) wants a password.
				return fmt.Errorf("the server is up but refuses %s: %s; name a role and database of the backed-up cluster with --user and --dbname (with --keep-hba, its pg_hba.conf decides)", s.URI, pgErr.Message)
			}
			last = err
		}
		// A server that stopped (recovery failed, the target cannot be
		// reached) will not become ready: say why at once.
		if _, err := dir.Stat("postmaster.pid"); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the server on %s stopped before it was ready; its log says: %s", s.DataDir, tail(logSince(dir, 0)))
		}
		select {
		case <-ctx.Done():
			if context.Cause(ctx) == context.DeadlineExceeded {
				return fmt.Errorf("the server on %s did not become ready within %s (last: %v); see %s, or raise --start-timeout", s.DataDir, o.Timeout, last, s.LogFile)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// recoveryState is "promoted" (not in recovery), "paused" or "replaying".
func recoveryState(ctx context.Context, dsn string) (string, error) {
	c, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer c.Close(context.WithoutCancel(ctx))
	res, err := c.Exec(ctx, "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END").ReadAll()
	if err != nil {
		return "", err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		return "", errors.New("unexpected answer to pg_is_in_recovery()")
	}
	row := res[0].Rows[0]
	switch {
	case string(row[0]) == "f":
		return "promoted", nil
	case string(row[1]) == "paused":
		return "paused", nil
	}
	return "replaying", nil
}

// Save records the server in the data directory for Discard.
func (s *Server) Save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(s.DataDir, StateFile)
	if err := os.WriteFile(p, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// ErrNotOurs marks a directory Discard must not touch.
var ErrNotOurs = errors.New("not started by pgstow restore --start")

// Discard stops the server pgstow started on dataDir and, unless keep,
// removes the directory and its tablespace directories. A directory that
// does not exist is already discarded. One without pgstow's state file is
// refused: it may be a real cluster.
func Discard(ctx context.Context, dataDir string, keep bool, log *slog.Logger) (removed bool, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Lstat(dataDir); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	dir, err := os.OpenRoot(dataDir)
	if err != nil {
		return false, err
	}
	defer dir.Close()
	// Through dir: a link planted in the state file's place cannot make
	// root read another file.
	data, err := dir.ReadFile(StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("%s: %w (no %s), so pgstow will not stop or delete it", dataDir, ErrNotOurs, StateFile)
	case err != nil:
		return false, fmt.Errorf("read %s: %w", StateFile, err)
	}
	var s Server
	if err := json.Unmarshal(data, &s); err != nil {
		return false, fmt.Errorf("%s in %s is damaged: %w", StateFile, dataDir, err)
	}
	// The state file lies in a directory the server's user owns, so it is
	// trusted no more than that user: pg_ctl runs as the directory's owner
	// (never root, whatever the file says), and only directories that
	// owner owns are removed.
	cred, err := ownerCredential(dataDir)
	if err != nil {
		return false, err
	}
	if _, err := dir.Stat("postmaster.pid"); err == nil && (cred == nil || cred.Uid != 0) {
		if err := stopServer(ctx, cred, s.BinDir, dataDir, log); err != nil {
			return false, err
		}
	}
	if keep {
		return false, nil
	}
	for _, d := range s.Extra {
		if err := ownedBy(d, cred); err != nil {
			log.Warn("tablespace directory left in place", "dir", d, "reason", err)
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			return false, fmt.Errorf("remove %s: %w", d, err)
		}
	}
	if err := os.RemoveAll(dataDir); err != nil {
		return false, fmt.Errorf("remove %s: %w", dataDir, err)
	}
	return true, nil
}

// stopServer stops the server on dataDir, fast then immediate; a server
// that is not running (a crash left postmaster.pid) is stopped already.
func stopServer(ctx context.Context, cred *syscall.Credential, bin, dataDir string, log *slog.Logger) error {
	notRunning := func() bool {
		var ee *exec.ExitError
		err := pgCtl(ctx, cred, bin, "status", "-D", dataDir)
		return errors.As(err, &ee) && ee.ExitCode() == 3 // pg_ctl: no server running
	}
	if err := pgCtl(ctx, cred, bin, "stop", "-D", dataDir, "-m", "fast", "-w", "-t", "60"); err != nil {
		if notRunning() {
			log.Info("no server was running", "data_dir", dataDir)
			return nil
		}
		log.Warn("fast shutdown failed; stopping immediately", "err", err)
		if err := pgCtl(ctx, cred, bin, "stop", "-D", dataDir, "-m", "immediate", "-w"); err != nil && !notRunning() {
			return fmt.Errorf("stop the server on %s: %w", dataDir, err)
		}
	}
	log.Info("server stopped", "data_dir", dataDir)
	return nil
}

// ownerCredential is who the server on dir runs as: the directory's
// owner, when we are root; nil (ourselves) otherwise.
func ownerCredential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	uid, gid, err := dirOwner(dir)
	if err != nil {
		return nil, err
	}
	cred := &syscall.Credential{Uid: uid, Gid: gid}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		cred = credentialOf(u, cred)
	}
	return cred, nil
}

// ownedBy checks that dir is a directory (not a link) owned by the
// server's user (cred's uid), as the tablespace directories restore
// --start handed over are; with cred nil (not root), by ourselves.
func ownedBy(dir string, cred *syscall.Credential) error {
	owner, _, err := dirOwner(dir)
	if err != nil {
		return err
	}
	uid := uint32(os.Geteuid())
	if cred != nil {
		uid = cred.Uid
	}
	if owner != uid {
		return fmt.Errorf("owned by uid %d, not the server's user (uid %d)", owner, uid)
	}
	return nil
}

// dirOwner is the owner of dir, which must be a directory, not a link.
func dirOwner(dir string) (uid, gid uint32, err error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return 0, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return 0, 0, fmt.Errorf("%s is not a directory", dir)
	}
	return st.Uid, st.Gid, nil
}

// FindBinDir finds pg_ctl and postgres of the given major: in hint if
// given, else where packages put them, else on PATH.
func FindBinDir(ctx context.Context, major int, hint string) (string, error) {
	var candidates []string
	if hint != "" {
		candidates = []string{hint}
	} else {
		candidates = []string{
			fmt.Sprintf("/usr/lib/postgresql/%d/bin", major), // Debian, Ubuntu
			fmt.Sprintf("/usr/pgsql-%d/bin", major),          // PGDG RPMs
			fmt.Sprintf("/opt/homebrew/opt/postgresql@%d/bin", major),
			fmt.Sprintf("/usr/local/opt/postgresql@%d/bin", major),
		}
		if p, err := exec.LookPath("pg_ctl"); err == nil {
			candidates = append(candidates, filepath.Dir(p))
		}
	}
	var seen []string
	for _, dir := range candidates {
		got, err := binMajor(ctx, dir)
		if err != nil {
			continue
		}
		if got == major {
			return dir, nil
		}
		seen = append(seen, fmt.Sprintf("%s is PostgreSQL %d", dir, got))
	}
	msg := fmt.Sprintf("no PostgreSQL %d server binaries (pg_ctl, postgres) found", major)
	if hint != "" {
		msg = fmt.Sprintf("--pg-bin %s does not hold PostgreSQL %d server binaries", hint, major)
	}
	if len(seen) > 0 {
		msg += " (" + strings.Join(seen, "; ") + ")"
	}
	return "", fmt.Errorf("%s; the backup needs the same major version: install it or name its bin directory with --pg-bin", msg)
}

// binMajor runs "postgres --version" in dir.
func binMajor(ctx context.Context, dir string) (int, error) {
	if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err != nil {
		return 0, err
	}
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "postgres"), "--version").Output()
	if err != nil {
		return 0, err
	}
	return parseMajor(string(out))
}

// parseMajor reads the major of "postgres (PostgreSQL) 15.18 (Debian …)",
// "… 18beta1" or "… 17devel".
func parseMajor(out string) (int, error) {
	f := strings.Fields(out)
	if len(f) < 3 || f[1] != "(PostgreSQL)" {
		return 0, fmt.Errorf("unexpected version %q", out)
	}
	v := f[2]
	if i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 10 {
		return 0, fmt.Errorf("unexpected version %q", out)
	}
	return n, nil
}

// serverUser is the credential the server runs under: none (ourselves)
// unless we are root, then runAs (default postgres).
func serverUser(runAs string) (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		return nil, "", nil
	}
	if runAs == "" {
		runAs = "postgres"
	}
	u, err := user.Lookup(runAs)
	if err != nil {
		return nil, "", fmt.Errorf("PostgreSQL refuses to run as root, and the OS user %q to run it as was not found: %w; name one with --run-as", runAs, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, "", fmt.Errorf("OS user %q has a non-numeric id", runAs)
	}
	return credentialOf(u, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}), runAs, nil
}

// credentialOf adds u's supplementary groups to cred, so that the server
// reaches what its user reaches through a group (a shared repository
// directory, ssl-cert).
func credentialOf(u *user.User, cred *syscall.Credential) *syscall.Credential {
	ids, err := u.GroupIds()
	if err != nil {
		return cred
	}
	for _, id := range ids {
		if g, err := strconv.ParseUint(id, 10, 32); err == nil {
			cred.Groups = append(cred.Groups, uint32(g))
		}
	}
	return cred
}

// handOver gives the directories to the server's user and checks that it
// can reach them: every parent must be searchable by it.
func handOver(cred *syscall.Credential, dirs []string) error {
	for _, dir := range dirs {
		err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, int(cred.Uid), int(cred.Gid))
		})
		if err != nil {
			return fmt.Errorf("give %s to the server's user: %w", dir, err)
		}
		for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if ok && fi.Mode().Perm()&0o001 == 0 && !(st.Uid == cred.Uid && fi.Mode().Perm()&0o100 != 0) &&
				!(st.Gid == cred.Gid && fi.Mode().Perm()&0o010 != 0) {
				return fmt.Errorf("the server's OS user cannot reach %s: %s is not searchable by it (mode %v); restore under a directory it can enter, e.g. /var/tmp", dir, p, fi.Mode().Perm())
			}
			if p == "/" {
				break
			}
		}
	}
	return nil
}

// pgCtl runs pg_ctl as the server's user, in its own process group so
// that a Ctrl-C meant for pgstow does not reach the server it leaves
// running.
func pgCtl(ctx context.Context, cred *syscall.Credential, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pg_ctl"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s: %w: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

// fileSize is the size of name in dir, 0 when missing.
func fileSize(dir *os.Root, name string) int64 {
	fi, err := dir.Stat(name)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince is the server log from offset on, read through dir so that a
// link planted in its place cannot make root read another file.
func logSince(dir *os.Root, offset int64) string {
	f, err := dir.Open(logName)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return string(data)
}

// tail picks the lines of a server log that say why it stopped, for
// errors: its last three FATAL, PANIC or ERROR lines and its last five
// lines, in log order. The end alone can miss the cause, because the
// server goes on logging after it (other processes terminating, a
// probe's connection, the shutdown).
func tail(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return "(nothing)"
	}
	keep := make([]bool, len(lines))
	for i := max(0, len(lines)-5); i < len(lines); i++ {
		keep[i] = true
	}
	for i, found := len(lines)-1, 0; i >= 0 && found < 3; i-- {
		if severe(lines[i]) {
			keep[i] = true
			found++
		}
	}
	var out []string
	for i, l := range lines {
		if keep[i] {
			out = append(out, l)
		}
	}
	return strings.Join(out, " | ")
}

// severe reports whether a server log line is a FATAL, PANIC or ERROR
// message (log_line_prefix, then the level and two spaces).
func severe(line string) bool {
	for _, level := range []string{"FATAL:  ", "PANIC:  ", "ERROR:  "} {
		if strings.Contains(line, level) {
			return true
		}
	}
	return false
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// quoteDSN quotes a keyword/value connection string value.
func quoteDSN(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
