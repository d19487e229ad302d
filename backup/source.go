package backup

import (
	"context"
	"io"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/replication"
)

// The interfaces below are what a backup needs of the server, declared
// here so that the package can be driven by a recorded or synthesized
// stream as well as by PostgreSQL; replicationDialer wires the real
// connections.

// archiveSource is a running base backup: its archives in order, then
// PostgreSQL's backup_manifest, then the end position.
// *replication.BaseBackup is one.
type archiveSource interface {
	// Start is the start position, timeline and tablespaces.
	Start() replication.Start
	// Streamed counts the archive bytes received so far.
	Streamed() int64
	// NextArchive returns the next archive, or io.EOF after the last.
	NextArchive() (*replication.Archive, error)
	// ManifestTo copies the backup_manifest that follows the archives.
	ManifestTo(w io.Writer) (int64, error)
	// Finish waits for the end of the backup.
	Finish() (replication.End, error)
	// Abort makes the reads pending or to come fail, from any goroutine.
	Abort()
	Close() error
}

// server is the connection a backup identifies the cluster on and takes
// the base backup over.
type server interface {
	// Target names the server in messages (host:port, no password).
	Target() string
	IdentifySystem(ctx context.Context) (replication.System, error)
	// Settings are what decides whether and how to take an incremental.
	Settings(ctx context.Context) (replication.Settings, error)
	// UploadManifest sends the parent's backup_manifest before an
	// incremental BaseBackup on the same connection.
	UploadManifest(ctx context.Context, r io.Reader) error
	BaseBackup(ctx context.Context, o replication.BackupOptions) (archiveSource, error)
	Close(ctx context.Context) error
}

// walSender is the second connection, which streams the WAL the backup
// needs from a temporary slot (--wal=stream).
type walSender interface {
	CreateTemporarySlot(ctx context.Context, name string) error
	// StreamWAL runs ws from the segment holding from until the one
	// holding the end LSN that arrives on endCh is stored.
	StreamWAL(ctx context.Context, ws *replication.WALStream, from manifest.LSN, endCh <-chan manifest.LSN, endTimeout time.Duration) error
	Close(ctx context.Context) error
}

// dialer opens a backup's connections to the server named by dsn.
type dialer interface {
	server(ctx context.Context, dsn string) (server, error)
	walSender(ctx context.Context, dsn string) (walSender, error)
}

// replicationDialer opens real replication connections.
type replicationDialer struct{}

func (replicationDialer) server(ctx context.Context, dsn string) (server, error) {
	c, err := replication.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	return replicationConn{c}, nil
}

func (replicationDialer) walSender(ctx context.Context, dsn string) (walSender, error) {
	c, err := replication.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	return replicationConn{c}, nil
}

// replicationConn adapts a replication connection to server and
// walSender; it only converts types.
type replicationConn struct{ *replication.Conn }

func (c replicationConn) BaseBackup(ctx context.Context, o replication.BackupOptions) (archiveSource, error) {
	bb, err := c.Conn.BaseBackup(ctx, o)
	if err != nil {
		// Not a typed nil in an interface.
		return nil, err
	}
	return bb, nil
}

func (c replicationConn) StreamWAL(ctx context.Context, ws *replication.WALStream, from manifest.LSN, endCh <-chan manifest.LSN, endTimeout time.Duration) error {
	return ws.Run(ctx, c.Conn, from, endCh, endTimeout)
}
