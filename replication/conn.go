// Package replication is pgstow's thin driver for PostgreSQL's physical
// replication protocol: IDENTIFY_SYSTEM, BASE_BACKUP (full, or incremental
// after UPLOAD_MANIFEST) and WAL streaming. It
// uses pgconn for connecting (authentication, TLS, libpq environment) and
// decodes the COPY stream itself, so the socket reader can move archive
// bytes into pooled buffers without a per-message allocation.
package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgstow/pgstow/manifest"
)

// MinServerVersion is the oldest server supported: PostgreSQL 15 brought
// the BASE_BACKUP (option, …) syntax and the single tagged COPY stream.
const MinServerVersion = 150000

// ErrUnsupportedServer is returned for servers older than MinServerVersion.
var ErrUnsupportedServer = errors.New("unsupported server version")

// ErrNoReplicationRole is returned when the role may not open a walsender.
var ErrNoReplicationRole = errors.New("role lacks the REPLICATION attribute")

// ErrStalled is returned when a connection that should be busy brings
// nothing for longer than its idle timeout.
var ErrStalled = errors.New("connection stalled")

// Conn is one physical replication connection.
type Conn struct {
	pg *pgconn.PgConn
	// rd is the reader pgconn reads the socket through (see readThrough).
	rd            io.Reader
	target        string // host:port for messages, never the password
	serverVersion int
}

// readThrough makes cfg's connections hand c the reader pgconn reads the
// socket through. When a write is slow (15 ms, a busy machine), pgconn
// starts a background read, and stops it only once that read returns:
// after the query it may still be pending, and would take the first
// bytes of what follows. A connection taken over for BASE_BACKUP reads
// through the same reader, which hands those bytes back first and then
// reads the socket directly. pgconn's own remedy, SyncConn, pings with
// SQL, which a physical walsender refuses.
func (c *Conn) readThrough(cfg *pgconn.Config) {
	build := cfg.BuildFrontend
	cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		c.rd = r
		return build(r, w)
	}
}

// System describes the cluster behind a connection.
type System struct {
	SystemID       string // decimal
	Timeline       uint32
	XLogPos        manifest.LSN
	ServerVersion  int // server_version_num
	WALSegmentSize uint64
	// Standby is true when the server is in recovery (in_hot_standby):
	// it cannot switch WAL segments, and its WAL comes from a primary.
	Standby bool
}

// Connect opens a physical replication connection. dsn may be empty, a
// keyword/value string or a URL; what it leaves out comes from the standard
// libpq environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD,
// PGSSLMODE…), as with every PostgreSQL client.
func Connect(ctx context.Context, dsn string) (*Conn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse connection string: %w", redactErr(err))
	}
	cfg.RuntimeParams["replication"] = "true"
	cfg.RuntimeParams["application_name"] = "pgstow"
	target := describeTarget(cfg)
	c := &Conn{target: target}
	c.readThrough(cfg)
	pg, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classifyConnectError(target, cfg.User, err)
	}
	c.pg = pg
	v, err := c.showInt(ctx, "server_version_num")
	if err != nil {
		pg.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	c.serverVersion = v
	if v < MinServerVersion {
		pg.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("server %s runs PostgreSQL %s: %w; pgstow needs PostgreSQL 15 or newer", target, versionString(v), ErrUnsupportedServer)
	}
	return c, nil
}

func describeTarget(cfg *pgconn.Config) string {
	host := cfg.Host
	if strings.HasPrefix(host, "/") {
		return fmt.Sprintf("socket %s/.s.PGSQL.%d", host, cfg.Port)
	}
	return fmt.Sprintf("%s:%d", host, cfg.Port)
}

// classifyConnectError turns the usual connection failures into one line
// that says what to do.
func classifyConnectError(target, user string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		said := fmt.Sprintf("%s: %s (SQLSTATE %s)", pgErr.Severity, pgErr.Message, pgErr.Code)
		switch {
		case pgErr.Code == "42501" || strings.Contains(pgErr.Message, "replication role") ||
			strings.Contains(pgErr.Message, "permission denied to start WAL sender"):
			return &serverRefusal{msg: fmt.Sprintf("connect to %s as %q: %s (grant it with: ALTER ROLE %s REPLICATION): %s",
				target, user, ErrNoReplicationRole, quoteIdent(user), said), err: errors.Join(ErrNoReplicationRole, err)}
		case pgErr.Code == "28000" && strings.Contains(pgErr.Message, "replication"):
			line := fmt.Sprintf("host replication %s %s scram-sha-256", user, hbaAddress(pgErr.Message))
			if strings.Contains(pgErr.Message, `host "[local]"`) {
				line = fmt.Sprintf("local replication %s peer", user)
			}
			return &serverRefusal{msg: fmt.Sprintf("connect to %s as %q: pg_hba.conf has no line allowing replication connections (add e.g. '%s', then SELECT pg_reload_conf()): %s",
				target, user, line, said), err: err}
		}
		// The server answered: its word alone, without pgconn's account
		// of every attempt (with and without TLS) that led to it.
		hint := ""
		switch {
		case pgErr.Code == "28P01":
			hint = "; check the password (PGPASSWORD, ~/.pgpass or the connection string)"
		case pgErr.Code == "28000" && strings.Contains(pgErr.Message, "does not exist"):
			hint = "; name a role that exists with user= in --pg or PGUSER"
		case pgErr.Code == "53300" && strings.Contains(pgErr.Message, "max_wal_senders"):
			hint = "; raise max_wal_senders on the server (pgstow backup uses 2: the backup and its WAL stream; it takes a restart)"
		}
		return &serverRefusal{msg: fmt.Sprintf("connect to %s as %q: %s%s", target, user, said, hint), err: err}
	}
	if strings.Contains(err.Error(), "server refused TLS connection") {
		return fmt.Errorf("connect to %s: the server does not accept TLS connections, and the connection string requires them (sslmode); enable ssl on the server or change sslmode: %w", target, redactErr(err))
	}
	// pgconn reports one line per attempt (with and without TLS, per
	// address); the network cause is the same in each and says it all.
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return fmt.Errorf("connect to %s: %w (is the server running there and accepting TCP connections?)", target, opErr)
	}
	return fmt.Errorf("connect to %s: %w", target, redactErr(err))
}

// serverRefusal is the server's own refusal, in one line, still wrapping
// pgconn's error for errors.As.
type serverRefusal struct {
	msg string
	err error
}

func (r *serverRefusal) Error() string { return redactPasswords(r.msg) }
func (r *serverRefusal) Unwrap() error { return r.err }

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// redactErr keeps passwords out of messages: pgconn errors can echo the
// connection string.
func redactErr(err error) error {
	if err == nil {
		return nil
	}
	return &redacted{err: err}
}

type redacted struct{ err error }

func (r *redacted) Error() string { return redactPasswords(r.err.Error()) }
func (r *redacted) Unwrap() error { return r.err }

func redactPasswords(s string) string {
	// keyword/value form: password=secret
	for _, key := range []string{"password=", "PASSWORD="} {
		for i := strings.Index(s, key); i >= 0; {
			j := i + len(key)
			k := j
			for k < len(s) && s[k] != ' ' && s[k] != '&' && s[k] != ')' {
				k++
			}
			s = s[:j] + "xxxxx" + s[k:]
			next := strings.Index(s[j+5:], key)
			if next < 0 {
				break
			}
			i = j + 5 + next
		}
	}
	// URL form: postgres://user:secret@host
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		if at := strings.Index(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 && !strings.ContainsAny(rest[:at], " /") {
				s = s[:i+3] + rest[:colon] + ":xxxxx" + rest[at:]
			}
		}
	}
	return s
}

func versionString(v int) string {
	return fmt.Sprintf("%d.%d", v/10000, v%10000)
}

// Target names the server for messages (host:port or socket path).
func (c *Conn) Target() string { return c.target }

// ServerVersion is the server's server_version_num.
func (c *Conn) ServerVersion() int { return c.serverVersion }

// IdentifySystem reads the system identifier, timeline and WAL segment size.
func (c *Conn) IdentifySystem(ctx context.Context) (System, error) {
	r, err := pglogrepl.IdentifySystem(ctx, c.pg)
	if err != nil {
		return System{}, fmt.Errorf("IDENTIFY_SYSTEM on %s: %w", c.target, err)
	}
	seg, err := c.showSize(ctx, "wal_segment_size")
	if err != nil {
		return System{}, err
	}
	if !manifest.ValidSegmentSize(seg) {
		return System{}, fmt.Errorf("server %s reports wal_segment_size %d, which is not a power of two between 1 MiB and 1 GiB", c.target, seg)
	}
	// in_hot_standby (PostgreSQL 14 and later) is also reported at
	// connection start, but SHOW reads it now rather than then.
	hs, err := c.show(ctx, "in_hot_standby")
	if err != nil {
		return System{}, err
	}
	return System{
		Standby:        hs == "on",
		SystemID:       r.SystemID,
		Timeline:       uint32(r.Timeline),
		XLogPos:        manifest.LSN(r.XLogPos),
		ServerVersion:  c.serverVersion,
		WALSegmentSize: seg,
	}, nil
}

func (c *Conn) show(ctx context.Context, name string) (string, error) {
	res, err := c.pg.Exec(ctx, "SHOW "+name).ReadAll()
	if err != nil {
		return "", fmt.Errorf("SHOW %s on %s: %w", name, c.target, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return "", fmt.Errorf("SHOW %s on %s: unexpected result shape", name, c.target)
	}
	return string(res[0].Rows[0][0]), nil
}

func (c *Conn) showInt(ctx context.Context, name string) (int, error) {
	s, err := c.show(ctx, name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("SHOW %s on %s: %q is not a number", name, c.target, s)
	}
	return v, nil
}

// showSize parses a GUC shown with a unit, as wal_segment_size is ("16MB").
func (c *Conn) showSize(ctx context.Context, name string) (uint64, error) {
	s, err := c.show(ctx, name)
	if err != nil {
		return 0, err
	}
	v, err := manifest.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("SHOW %s on %s: %w", name, c.target, err)
	}
	return uint64(v), nil
}

// Close ends the connection; a temporary slot created on it is dropped by
// the server.
func (c *Conn) Close(ctx context.Context) error {
	if c.pg == nil {
		return nil
	}
	return c.pg.Close(ctx)
}

// hbaClientHost finds the client address in the server's "no pg_hba.conf
// entry … from host "10.0.0.9"" message.
var hbaClientHost = regexp.MustCompile(`host "([0-9A-Fa-f.:]+)"`)

// hbaAddress is the pg_hba.conf address of this client as the server saw
// it: exactly this host, never a wide range.
func hbaAddress(msg string) string {
	m := hbaClientHost.FindStringSubmatch(msg)
	switch {
	case m == nil:
		return "<this host's address>/32"
	case strings.Contains(m[1], ":"):
		return m[1] + "/128"
	default:
		return m[1] + "/32"
	}
}
