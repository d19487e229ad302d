package replication

import (
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"github.com/pgstow/pgstow/manifest"
)

// BackupOptions are the BASE_BACKUP options pgstow exposes.
type BackupOptions struct {
	Label          string
	FastCheckpoint bool
	// MaxRate throttles the server, in bytes per second (0: unlimited).
	MaxRate uint64
	// SkipChecksumVerification turns off the server's data-page checksum
	// check while sending (on by default, as in PostgreSQL).
	SkipChecksumVerification bool
	// ManifestChecksums is the algorithm for PostgreSQL's backup_manifest:
	// CRC32C (default), SHA224…SHA512 or NONE.
	ManifestChecksums string
	// Compression is the server-side codec: "", "lz4", "zstd" or "gzip".
	// pgstow decompresses it on arrival to parse the tar, so it trades
	// server CPU for network bytes.
	Compression       string
	CompressionDetail string
	// Progress asks the server to estimate sizes first (a directory scan).
	Progress bool
	// Incremental asks for an incremental backup against the manifest
	// sent with UploadManifest just before on the same connection
	// (PostgreSQL 17+): changed relation files come as INCREMENTAL.<name>
	// members. The manifest checksums must then be CRC32C, which block
	// checksums combine into.
	Incremental bool
	// OnNotice receives server notices and warnings (e.g. checksum
	// failures); may be nil.
	OnNotice func(*pgconn.PgError)
	// IdleTimeout fails the backup when the archive stream, once it has
	// started, brings no byte for this long (0: never). A stalled network
	// path is otherwise invisible: whatever hangs in between keeps
	// answering TCP keepalives. Before the stream starts the server may
	// be silent for a whole spread checkpoint, so that wait is bounded
	// only by keepalives.
	IdleTimeout time.Duration
}

// Tablespace is one row of BASE_BACKUP's tablespace result set.
type Tablespace struct {
	OID      uint32
	Location string
	SizeKB   int64 // -1 when unknown
}

// Start is what the server reports when the backup starts.
type Start struct {
	LSN         manifest.LSN
	Timeline    uint32
	Tablespaces []Tablespace // user tablespaces only; the main directory is not listed
	TotalKB     int64        // with Progress; -1 otherwise
}

// End is what the server reports when the backup ends.
type End struct {
	LSN      manifest.LSN
	Timeline uint32
}

// Archive is one tar archive of the stream. Read yields the tar bytes,
// already decompressed when the server compressed them.
type Archive struct {
	// Name is the archive's name without a compression suffix: "base.tar"
	// or "<oid>.tar".
	Name string
	// TablespacePath is the tablespace location ("" for base.tar).
	TablespacePath string
	r              io.Reader
	closer         func()
}

func (a *Archive) Read(p []byte) (int, error) { return a.r.Read(p) }

// NewArchive makes an archive that reads tar bytes from r, for a source
// other than a live BASE_BACKUP: a recorded stream, or a test's.
func NewArchive(name, tablespacePath string, r io.Reader) *Archive {
	return &Archive{Name: name, TablespacePath: tablespacePath, r: r}
}

const (
	socketBufSize = 256 << 10
	// ownBufSize is the buffer that serves reads smaller than
	// directRead: they are filled from it, with one copy.
	ownBufSize = 1 << 20
	// directRead is the smallest read that the socket reader fills in
	// place, with no copy in between.
	directRead = 64 << 10
)

type eventKind int

const (
	evData eventKind = iota
	evArchive
	evManifest
	evEnd
	evErr
)

type event struct {
	kind eventKind
	buf  []byte // evData: the lent buffer, filled from its start
	name string // evArchive
	path string // evArchive
	end  End    // evEnd
	err  error  // evErr
}

// BaseBackup is a running BASE_BACKUP. Read its archives in order with
// NextArchive, then Manifest, then Finish. One goroutine reads the socket
// and decodes the protocol; archive bytes go straight into the buffer the
// reader lends it for each Read (a chunk's buffer, for the uploader), so
// they are copied once, from the socket's buffer, and not again. It reads
// archive bytes only while a buffer is lent, so backpressure from a slow
// consumer reaches the server through TCP and memory stays fixed.
type BaseBackup struct {
	start  Start
	conn   net.Conn
	target string
	events chan event
	// lend hands the buffer the next archive bytes go into to the socket
	// reader, which takes one only when it has archive bytes to place.
	// Like events it is unbuffered, so the reader is never ahead of the
	// consumer: a buffer it takes holds bytes of the archive being read,
	// and comes back as evData (or the stream fails) before any other
	// event.
	lend     chan []byte
	cur      []byte // unread bytes in own
	own      []byte // serves small reads; made on first use
	pending  *event
	done     bool // evEnd or evErr consumed
	end      End
	err      error
	streamed atomic.Int64 // archive bytes received
	estimate atomic.Int64 // server's progress counter
	stop     func() bool
	cancel   context.CancelFunc
	exited   chan struct{} // closed when readLoop returns
	exitErr  error         // why it returned, if it failed; set before exited closes
}

// BaseBackup sends BASE_BACKUP and reads up to the start of the archive
// stream. The connection is dedicated to the backup from here on; close
// the BaseBackup (or the Conn) when done.
func (c *Conn) BaseBackup(ctx context.Context, opts BackupOptions) (*BaseBackup, error) {
	cmd, err := buildBaseBackupCommand(opts)
	if err != nil {
		return nil, err
	}
	if c.pg == nil {
		return nil, fmt.Errorf("BASE_BACKUP on %s: the connection was taken over by an earlier base backup", c.target)
	}
	if opts.Incremental && c.serverVersion < MinIncrementalVersion {
		return nil, fmt.Errorf("BASE_BACKUP on %s: %w: PostgreSQL %s has no incremental backups (they need PostgreSQL 17 or newer)",
			c.target, ErrIncrementalRefused, versionString(c.serverVersion))
	}
	hj, err := c.pg.Hijack()
	if err != nil {
		return nil, fmt.Errorf("take over connection to %s: %w", c.target, err)
	}
	c.pg = nil
	if n := hj.Frontend.ReadBufferLen(); n > 0 {
		hj.Conn.Close()
		return nil, fmt.Errorf("take over connection to %s: %d bytes the server sent are still unread", c.target, n)
	}
	// Reads go through pgconn's reader, which may hold or be about to
	// receive what the socket delivers next (Conn.readThrough).
	rd := c.rd
	if rd == nil {
		rd = hj.Conn
	}
	nc := &idleConn{Conn: hj.Conn, r: rd, idle: opts.IdleTimeout}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(ctx, nc.abort)
	fail := func(err error) (*BaseBackup, error) {
		stop()
		cancel()
		nc.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
		return nil, err
	}
	if _, err := nc.Write(queryMessage(cmd)); err != nil {
		return fail(fmt.Errorf("send BASE_BACKUP to %s: %w", c.target, err))
	}
	w := newWireReader(nc, socketBufSize)
	// refused handles an error the server raised before the archive
	// stream: nothing was sent yet, and the command is over, so the
	// connection goes back to c for another command (a full backup after
	// a refused incremental) when it is clean.
	refused := func(err error) (*BaseBackup, error) {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			return fail(fmt.Errorf("BASE_BACKUP on %s: %w", c.target, err))
		}
		if opts.Incremental && incrementalRefusal(pgErr) {
			err = fmt.Errorf("BASE_BACKUP on %s: %w: %w", c.target, ErrIncrementalRefused, err)
		} else {
			err = fmt.Errorf("BASE_BACKUP on %s: %w", c.target, err)
		}
		if !c.reclaim(hj, nc, w, stop, opts.OnNotice) {
			return fail(err)
		}
		cancel()
		return nil, err
	}
	// Result set 1: start LSN and timeline.
	rs, typ, err := w.readResultSet(opts.OnNotice)
	if err != nil {
		return refused(err)
	}
	if typ != 'C' || len(rs.rows) != 1 || len(rs.rows[0]) < 2 {
		return fail(fmt.Errorf("BASE_BACKUP on %s: unexpected start result (message %q)", c.target, typ))
	}
	var st Start
	if st.LSN, err = manifest.ParseLSN(string(rs.rows[0][0])); err != nil {
		return fail(fmt.Errorf("BASE_BACKUP start LSN: %w", err))
	}
	tli, err := parseUint(rs.rows[0][1], 32)
	if err != nil {
		return fail(fmt.Errorf("BASE_BACKUP start timeline: %w", err))
	}
	st.Timeline = uint32(tli)
	// Result set 2: tablespaces; the main directory is the row with NULLs.
	rs, typ, err = w.readResultSet(opts.OnNotice)
	if err != nil {
		return refused(err)
	}
	if typ != 'C' {
		return fail(fmt.Errorf("BASE_BACKUP on %s: unexpected message %q instead of the tablespace list", c.target, typ))
	}
	st.TotalKB = -1
	for _, row := range rs.rows {
		if len(row) < 3 {
			return fail(fmt.Errorf("BASE_BACKUP on %s: short tablespace row", c.target))
		}
		size := int64(-1)
		if row[2] != nil {
			v, err := parseUint(row[2], 63)
			if err != nil {
				return fail(fmt.Errorf("BASE_BACKUP tablespace size: %w", err))
			}
			size = int64(v)
			if st.TotalKB < 0 {
				st.TotalKB = 0
			}
			st.TotalKB += size
		}
		if row[0] == nil {
			continue
		}
		oid, err := parseUint(row[0], 32)
		if err != nil {
			return fail(fmt.Errorf("BASE_BACKUP tablespace oid: %w", err))
		}
		st.Tablespaces = append(st.Tablespaces, Tablespace{OID: uint32(oid), Location: string(row[1]), SizeKB: size})
	}
	// CopyOutResponse starts the archive stream.
	_, typ, err = w.readResultSet(opts.OnNotice)
	if err != nil {
		return refused(err)
	}
	if typ != 'H' {
		return fail(fmt.Errorf("BASE_BACKUP on %s: unexpected message %q instead of the archive stream", c.target, typ))
	}
	b := newBaseBackup(st, nc, c.target, stop, cancel)
	nc.arm()
	go b.readLoop(ctx, w, opts.OnNotice)
	return b, nil
}

// reclaim gives c back the connection BaseBackup took over, after the
// server ended the command with an error before the archive stream: it
// reads up to ReadyForQuery and rebuilds the pgconn connection on the
// socket. It reports false, leaving the connection to be closed, when
// that cannot be done cleanly (another error, bytes beyond
// ReadyForQuery, a context that ended).
func (c *Conn) reclaim(hj *pgconn.HijackedConn, nc *idleConn, w *wireReader, stop func() bool, onNotice func(*pgconn.PgError)) bool {
	for {
		_, typ, err := w.readResultSet(onNotice)
		if err != nil {
			return false
		}
		if typ == 'Z' {
			break
		}
		if typ != 'C' {
			return false
		}
	}
	// Nothing may be left in our buffer: pgconn would not see it. The
	// server says nothing unasked after ReadyForQuery.
	if w.br.Buffered() > 0 || !stop() || nc.aborted.Load() {
		return false
	}
	if err := hj.Conn.SetDeadline(time.Time{}); err != nil {
		return false
	}
	pg, err := pgconn.Construct(hj)
	if err != nil {
		return false
	}
	c.pg = pg
	return true
}

func newBaseBackup(st Start, nc net.Conn, target string, stop func() bool, cancel context.CancelFunc) *BaseBackup {
	b := &BaseBackup{
		start:  st,
		conn:   nc,
		target: target,
		events: make(chan event),
		exited: make(chan struct{}),
		lend:   make(chan []byte),
		stop:   stop,
		cancel: cancel,
	}
	return b
}

func buildBaseBackupCommand(o BackupOptions) (string, error) {
	label := o.Label
	if label == "" {
		label = "pgstow"
	}
	opts := []string{"LABEL " + quoteLiteral(label), "WAIT false", "TABLESPACE_MAP", "MANIFEST 'yes'"}
	alg := strings.ToUpper(o.ManifestChecksums)
	if alg == "" {
		alg = "CRC32C"
	}
	switch alg {
	case "NONE", "CRC32C", "SHA224", "SHA256", "SHA384", "SHA512":
	default:
		return "", fmt.Errorf("manifest checksum algorithm %q: use CRC32C, SHA224, SHA256, SHA384, SHA512 or NONE", o.ManifestChecksums)
	}
	if o.Incremental && alg != "CRC32C" {
		return "", fmt.Errorf("manifest checksum algorithm %s: an incremental backup needs CRC32C", alg)
	}
	opts = append(opts, "MANIFEST_CHECKSUMS "+quoteLiteral(alg))
	if o.Incremental {
		opts = append(opts, "INCREMENTAL")
	}
	if o.FastCheckpoint {
		opts = append(opts, "CHECKPOINT 'fast'")
	}
	if o.Progress {
		opts = append(opts, "PROGRESS")
	}
	if o.MaxRate > 0 {
		kb := o.MaxRate / 1024
		if kb < 32 || kb > 1048576 {
			return "", fmt.Errorf("max rate %d bytes/s: PostgreSQL accepts 32kB/s to 1GB/s", o.MaxRate)
		}
		opts = append(opts, fmt.Sprintf("MAX_RATE %d", kb))
	}
	if o.SkipChecksumVerification {
		opts = append(opts, "VERIFY_CHECKSUMS false")
	}
	switch o.Compression {
	case "", "none":
	case "lz4", "zstd", "gzip":
		opts = append(opts, "COMPRESSION "+quoteLiteral(o.Compression))
		if o.CompressionDetail != "" {
			opts = append(opts, "COMPRESSION_DETAIL "+quoteLiteral(o.CompressionDetail))
		}
	default:
		return "", fmt.Errorf("server compression %q: use lz4, zstd, gzip or none", o.Compression)
	}
	return "BASE_BACKUP ( " + strings.Join(opts, ", ") + " )", nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func queryMessage(sql string) []byte {
	b := make([]byte, 5, 6+len(sql))
	b[0] = 'Q'
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(sql)+1))
	b = append(b, sql...)
	return append(b, 0)
}

// readLoop is the only reader of the socket while the stream runs.
func (b *BaseBackup) readLoop(ctx context.Context, w *wireReader, onNotice func(*pgconn.PgError)) {
	// The reader may stop without delivering its last event (it gives up
	// on a send once ctx ends); exitErr and exited let the consumer learn
	// why instead of waiting for an event that never comes.
	defer close(b.exited)
	defer func() {
		if b.exitErr == nil && ctx.Err() != nil {
			b.exitErr = fmt.Errorf("backup stream from %s aborted: %w", b.target, context.Cause(ctx))
		}
	}()
	var cur []byte
	flush := func() bool {
		if len(cur) == 0 {
			return true
		}
		select {
		case b.events <- event{kind: evData, buf: cur}:
			cur = nil
			return true
		case <-ctx.Done():
			return false
		}
	}
	send := func(ev event) bool {
		if !flush() {
			return false
		}
		select {
		case b.events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	fail := func(err error) {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
		b.exitErr = err
		send(event{kind: evErr, err: err})
	}
	readErr := func(err error) error {
		return fmt.Errorf("read backup stream from %s: %w", b.target, eofIsUnexpected(err))
	}
	var end End
	gotEnd := false
	for {
		typ, n, err := w.header()
		if err != nil {
			fail(readErr(err))
			return
		}
		if typ == 'd' {
			if n < 1 {
				fail(fmt.Errorf("protocol error: empty CopyData"))
				return
			}
			sub, err := w.br.ReadByte()
			if err != nil {
				fail(readErr(err))
				return
			}
			n--
			if sub == 'd' {
				b.streamed.Add(int64(n))
				for n > 0 {
					if cur == nil {
						select {
						case cur = <-b.lend:
						case <-ctx.Done():
							fail(ctx.Err())
							return
						}
					}
					k := min(n, cap(cur)-len(cur))
					if _, err := io.ReadFull(w.br, cur[len(cur):len(cur)+k]); err != nil {
						fail(readErr(err))
						return
					}
					cur = cur[:len(cur)+k]
					n -= k
					if len(cur) == cap(cur) && !flush() {
						fail(ctx.Err())
						return
					}
				}
				continue
			}
			body, err := w.body(n)
			if err != nil {
				fail(readErr(err))
				return
			}
			switch sub {
			case 'n':
				name, rest, ok1 := cstring(body)
				path, _, ok2 := cstring(rest)
				if !ok1 || !ok2 {
					fail(fmt.Errorf("protocol error: malformed new-archive message"))
					return
				}
				if !send(event{kind: evArchive, name: name, path: path}) {
					return
				}
			case 'm':
				if !send(event{kind: evManifest}) {
					return
				}
			case 'p':
				if len(body) >= 8 {
					b.estimate.Store(int64(binary.BigEndian.Uint64(body)))
				}
			default:
				fail(fmt.Errorf("protocol error: unknown CopyData type %q", sub))
				return
			}
			continue
		}
		body, err := w.body(n)
		if err != nil {
			fail(readErr(err))
			return
		}
		switch typ {
		case 'c': // CopyDone
			if !flush() {
				return
			}
		case 'N':
			if onNotice != nil {
				onNotice(parseError(body))
			}
		case 'E':
			fail(fmt.Errorf("server %s: %w", b.target, parseError(body)))
			return
		case 'D':
			row, err := parseDataRow(body)
			if err != nil {
				fail(err)
				return
			}
			if len(row) >= 2 && row[0] != nil {
				if end.LSN, err = manifest.ParseLSN(string(row[0])); err != nil {
					fail(fmt.Errorf("BASE_BACKUP end LSN: %w", err))
					return
				}
				tli, err := parseUint(row[1], 32)
				if err != nil {
					fail(fmt.Errorf("BASE_BACKUP end timeline: %w", err))
					return
				}
				end.Timeline = uint32(tli)
				gotEnd = true
			}
		case 'Z':
			if !gotEnd {
				fail(fmt.Errorf("BASE_BACKUP on %s ended without reporting its end LSN", b.target))
				return
			}
			send(event{kind: evEnd, end: end})
			return
		case 'T', 'C', 'S', 'A', 'K':
		default:
			fail(fmt.Errorf("protocol error: unexpected message %q in backup stream", typ))
			return
		}
	}
}

// Start reports the start LSN, timeline and tablespaces.
func (b *BaseBackup) Start() Start { return b.start }

// Streamed is the number of archive bytes received so far (compressed, if
// the server compresses).
func (b *BaseBackup) Streamed() int64 { return b.streamed.Load() }

// next returns the next event, honouring one pushed back.
func (b *BaseBackup) next() event { return b.nextLending(nil) }

// nextLending returns the next event, offering dst to the socket reader
// for archive bytes while it waits (nil offers nothing). Once the reader
// takes dst, the next event is evData with dst's bytes, or evErr.
func (b *BaseBackup) nextLending(dst []byte) event {
	if b.pending != nil {
		ev := *b.pending
		b.pending = nil
		return ev
	}
	if b.done {
		return event{kind: evErr, err: b.terminalErr()}
	}
	lend := b.lend
	if dst == nil {
		lend = nil // never ready
	}
	var ev event
	for received := false; !received; {
		select {
		case lend <- dst:
			lend = nil
		case ev = <-b.events:
			received = true
		case <-b.exited:
			received = true
			err := b.exitErr
			if err == nil {
				err = fmt.Errorf("backup stream from %s ended without its end marker", b.target)
			}
			ev = event{kind: evErr, err: err}
		}
	}
	switch ev.kind {
	case evEnd:
		b.done, b.end = true, ev.end
	case evErr:
		b.done, b.err = true, ev.err
	}
	return ev
}

func (b *BaseBackup) terminalErr() error {
	if b.err != nil {
		return b.err
	}
	return fmt.Errorf("backup stream already ended")
}

// readRaw reads archive bytes of the current archive; io.EOF at its end.
// A read of directRead bytes or more lends p itself to the socket reader,
// which fills it whole (or up to the archive's end) and hands it back; a
// smaller one lends own and is served from it.
func (b *BaseBackup) readRaw(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(b.cur) == 0 {
		dst := p
		if len(p) < directRead {
			if b.own == nil {
				b.own = make([]byte, ownBufSize)
			}
			dst = b.own
		}
		// Capped at its length: the reader fills up to cap.
		ev := b.nextLending(dst[:0:len(dst)])
		switch {
		case ev.kind == evData && len(p) >= directRead:
			return len(ev.buf), nil // in place
		case ev.kind == evData:
			b.cur = ev.buf
		case ev.kind == evErr:
			b.pending = &ev
			return 0, ev.err
		default:
			b.pending = &ev
			return 0, io.EOF
		}
	}
	n := copy(p, b.cur)
	b.cur = b.cur[n:]
	return n, nil
}

type rawReader struct{ b *BaseBackup }

func (r rawReader) Read(p []byte) (int, error) { return r.b.readRaw(p) }

// discard drops what is left of the current archive.
func (b *BaseBackup) discard() error {
	_, err := io.Copy(io.Discard, rawReader{b})
	return err
}

// NextArchive returns the next archive, or io.EOF when the archives are
// over and the manifest (if any) follows. Unread data of the previous
// archive is discarded.
func (b *BaseBackup) NextArchive() (*Archive, error) {
	if err := b.discard(); err != nil {
		return nil, err
	}
	ev := b.next()
	switch ev.kind {
	case evArchive:
	case evErr:
		b.pending = &ev
		return nil, ev.err
	default:
		b.pending = &ev
		return nil, io.EOF
	}
	a := &Archive{Name: ev.name, TablespacePath: ev.path}
	raw := io.Reader(rawReader{b})
	switch {
	case strings.HasSuffix(ev.name, ".lz4"):
		a.Name = strings.TrimSuffix(ev.name, ".lz4")
		a.r = lz4.NewReader(raw)
	case strings.HasSuffix(ev.name, ".zst"):
		d, err := zstd.NewReader(raw, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("archive %s: %w", ev.name, err)
		}
		a.Name = strings.TrimSuffix(ev.name, ".zst")
		a.r, a.closer = d, d.Close
	case strings.HasSuffix(ev.name, ".gz"):
		a.Name = strings.TrimSuffix(ev.name, ".gz")
		a.r = &lazyGzip{src: raw}
	default:
		a.r = raw
	}
	if !strings.HasSuffix(a.Name, ".tar") {
		return nil, fmt.Errorf("server %s sent archive %q, which is not a tar archive", b.target, ev.name)
	}
	return a, nil
}

// lazyGzip defers reading the gzip header to the first Read, so that
// NextArchive does not block on the stream.
type lazyGzip struct {
	src io.Reader
	zr  *gzip.Reader
	err error
}

func (l *lazyGzip) Read(p []byte) (int, error) {
	if l.zr == nil && l.err == nil {
		l.zr, l.err = gzip.NewReader(l.src)
	}
	if l.err != nil {
		return 0, l.err
	}
	return l.zr.Read(p)
}

// ManifestTo copies PostgreSQL's backup_manifest, which follows the
// archives, to w and returns its size: a writer rather than a slice,
// because with a hundred thousand files it is tens of MB.
func (b *BaseBackup) ManifestTo(w io.Writer) (int64, error) {
	if err := b.discard(); err != nil {
		return 0, err
	}
	ev := b.next()
	switch ev.kind {
	case evManifest:
	case evErr:
		b.pending = &ev
		return 0, ev.err
	case evArchive:
		b.pending = &ev
		return 0, fmt.Errorf("manifest requested while archive %s is still to come", ev.name)
	default:
		b.pending = &ev
		return 0, fmt.Errorf("server %s sent no backup_manifest", b.target)
	}
	return io.Copy(w, rawReader{b})
}

// Finish waits for the end of the backup and returns its end LSN. It
// discards anything not read.
func (b *BaseBackup) Finish() (End, error) {
	for {
		if err := b.discard(); err != nil {
			return End{}, err
		}
		ev := b.next()
		switch ev.kind {
		case evEnd:
			return ev.end, nil
		case evErr:
			if b.end != (End{}) {
				return b.end, nil
			}
			return End{}, ev.err
		}
	}
}

// Abort stops the stream from any goroutine: the reader fails and every
// pending or later call returns an error.
func (b *BaseBackup) Abort() { b.cancel() }

// Close releases the connection. Closing before Finish aborts the backup
// on the server.
func (b *BaseBackup) Close() error {
	b.stop()
	b.cancel()
	if b.done && b.err == nil {
		// Polite goodbye on a clean connection.
		_, _ = b.conn.Write([]byte{'X', 0, 0, 0, 4})
	}
	err := b.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// idleConn fails a read that waits longer than idle once armed, so that
// a stalled connection is noticed within a bounded time.
type idleConn struct {
	net.Conn
	r       io.Reader // reads Conn, perhaps through a buffer before it
	idle    time.Duration
	armed   atomic.Bool
	aborted atomic.Bool
}

func (c *idleConn) arm() { c.armed.Store(c.idle > 0) }

// abort makes every read fail at once, for good.
func (c *idleConn) abort() {
	c.aborted.Store(true)
	_ = c.Conn.SetDeadline(time.Unix(1, 0))
}

func (c *idleConn) Read(p []byte) (int, error) {
	timed := c.armed.Load()
	if timed {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
		if c.aborted.Load() { // abort raced with the line above
			_ = c.Conn.SetDeadline(time.Unix(1, 0))
		}
	}
	n, err := c.r.Read(p)
	if err != nil && timed && !c.aborted.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("%w: no data from the server for %s; the network path looks stalled (raise --io-timeout if the server is just slow)", ErrStalled, c.idle)
	}
	return n, err
}
