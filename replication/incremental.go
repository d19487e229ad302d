package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// MinIncrementalVersion is the oldest server that takes incremental base
// backups: PostgreSQL 17 brought UPLOAD_MANIFEST, BASE_BACKUP's
// INCREMENTAL option and the WAL summarizer they rely on.
const MinIncrementalVersion = 170000

// ErrIncrementalRefused marks a server's refusal to take an incremental
// backup (WAL summaries missing or off, a manifest it rejects, a timeline
// it does not know). It always arrives before any archive byte, and the
// connection is still usable (see BaseBackup), so the caller can take a
// full backup instead. The server's own error stays reachable with
// errors.As (*pgconn.PgError).
var ErrIncrementalRefused = errors.New("the server refused the incremental backup")

// UploadManifest sends the backup_manifest of an earlier backup with
// UPLOAD_MANIFEST, the first half of an incremental backup: BASE_BACKUP
// with Incremental must follow on the same connection. The manifest is
// streamed from r in CopyData messages, never held whole (a large cluster's
// is tens of MB). A server error, the manifest's parse errors included, is
// returned wrapping both ErrIncrementalRefused and the *pgconn.PgError; the
// connection stays usable then. An error reading r is returned as such.
func (c *Conn) UploadManifest(ctx context.Context, r io.Reader) error {
	if c.pg == nil {
		return fmt.Errorf("UPLOAD_MANIFEST on %s: the connection was taken over by a base backup", c.target)
	}
	if c.serverVersion < MinIncrementalVersion {
		return fmt.Errorf("UPLOAD_MANIFEST on %s: %w: PostgreSQL %s has no incremental backups (they need PostgreSQL 17 or newer)",
			c.target, ErrIncrementalRefused, versionString(c.serverVersion))
	}
	// pgconn answers a read error with CopyFail, and the server echoes it
	// back as its own error: keep ours, which says what really failed.
	src := &errReader{r: r}
	_, err := c.pg.CopyFrom(ctx, src, "UPLOAD_MANIFEST")
	switch {
	case src.err != nil && !errors.Is(src.err, io.EOF):
		return fmt.Errorf("UPLOAD_MANIFEST on %s: read the manifest: %w", c.target, src.err)
	case err == nil:
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return fmt.Errorf("UPLOAD_MANIFEST on %s: %w: %w", c.target, ErrIncrementalRefused, err)
	}
	return fmt.Errorf("UPLOAD_MANIFEST on %s: %w", c.target, err)
}

// errReader remembers the error its reader returned.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// incrementalRefusal tells whether a server error that ended an
// INCREMENTAL BASE_BACKUP before its stream means the server cannot take
// this incremental, as opposed to failing for another reason (which a
// full backup would meet too). PostgreSQL raises its refusals (summaries
// off or missing, timelines or LSNs the manifest names that do not fit
// this server, no manifest uploaded) as "object not in prerequisite
// state"; a server that does not know INCREMENTAL answers with a syntax
// error; manifest problems noticed late are internal errors naming it.
func incrementalRefusal(e *pgconn.PgError) bool {
	if e.Code == "55000" || strings.HasPrefix(e.Code, "42") {
		return true
	}
	m := strings.ToLower(e.Message)
	for _, w := range []string{"incremental", "manifest", "wal summar", "timeline"} {
		if strings.Contains(m, w) {
			return true
		}
	}
	return false
}

// Settings are the server settings an incremental backup depends on.
type Settings struct {
	// ServerVersion is server_version_num.
	ServerVersion int
	// SummarizeWAL is summarize_wal: the WAL summarizer runs, so the
	// server can take incremental backups (always false before 17).
	SummarizeWAL bool
	// BlockSize is block_size (BLCKSZ), in bytes.
	BlockSize int
	// SegmentSize is segment_size: the bytes of one relation segment file
	// (RELSEG_SIZE × BLCKSZ, 1 GiB by default).
	SegmentSize int64
	// WALSummaryKeepTime is wal_summary_keep_time: how long the server
	// keeps WAL summaries, hence the oldest parent an incremental can
	// have. 0 when summaries are never removed, or before 17.
	WALSummaryKeepTime time.Duration
}

// Settings reads the settings that decide whether and how an incremental
// backup can be taken, with SHOW over the replication connection.
func (c *Conn) Settings(ctx context.Context) (Settings, error) {
	s := Settings{ServerVersion: c.serverVersion}
	bs, err := c.showInt(ctx, "block_size")
	if err != nil {
		return Settings{}, err
	}
	if bs < 1024 || bs > 32768 || bs&(bs-1) != 0 {
		return Settings{}, fmt.Errorf("server %s reports block_size %d, which is not a power of two between 1 kB and 32 kB", c.target, bs)
	}
	s.BlockSize = bs
	seg, err := c.showSize(ctx, "segment_size")
	if err != nil {
		return Settings{}, err
	}
	if seg%uint64(bs) != 0 || seg/uint64(bs) > 1<<31 {
		return Settings{}, fmt.Errorf("server %s reports segment_size %d bytes, which is not a whole number of %d-byte blocks", c.target, seg, bs)
	}
	s.SegmentSize = int64(seg)
	if c.serverVersion < MinIncrementalVersion {
		return s, nil
	}
	on, err := c.showOptional(ctx, "summarize_wal")
	if err != nil {
		return Settings{}, err
	}
	s.SummarizeWAL = on == "on"
	keep, err := c.showOptional(ctx, "wal_summary_keep_time")
	if err != nil {
		return Settings{}, err
	}
	if keep != "" {
		if s.WALSummaryKeepTime, err = parseGUCDuration(keep, time.Minute); err != nil {
			return Settings{}, fmt.Errorf("SHOW wal_summary_keep_time on %s: %w", c.target, err)
		}
	}
	return s, nil
}

// showOptional is show for a parameter a server may not have: "" then.
func (c *Conn) showOptional(ctx context.Context, name string) (string, error) {
	v, err := c.show(ctx, name)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // unrecognized configuration parameter
		return "", nil
	}
	return v, err
}

// gucTimeUnits are the units PostgreSQL shows time settings in.
var gucTimeUnits = map[string]time.Duration{
	"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second,
	"min": time.Minute, "h": time.Hour, "d": 24 * time.Hour,
}

// parseGUCDuration parses a time setting as SHOW prints it ("10d",
// "30min", "0"); a bare number is in the setting's base unit.
func parseGUCDuration(s string, base time.Duration) (time.Duration, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a duration", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: %w", s, err)
	}
	unit := base
	if u := strings.TrimSpace(t[i:]); u != "" {
		var ok bool
		if unit, ok = gucTimeUnits[u]; !ok {
			return 0, fmt.Errorf("%q: unknown time unit %q", s, u)
		}
	}
	if n > int64(1<<63-1)/int64(unit) {
		return 0, fmt.Errorf("%q: out of range", s)
	}
	return time.Duration(n) * unit, nil
}

// RelsegBlocks is the number of blocks of a relation segment file
// (RELSEG_SIZE), the bound of an INCREMENTAL file's block numbers.
func (s Settings) RelsegBlocks() int {
	if s.BlockSize == 0 {
		return 0
	}
	return int(s.SegmentSize / int64(s.BlockSize))
}
