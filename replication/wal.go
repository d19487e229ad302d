package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/spool"
)

// ErrStreamEnded is returned when the server ends WAL streaming itself:
// it is shutting down, or the timeline streamed ended (a promotion).
var ErrStreamEnded = errors.New("WAL stream ended by the server")

// CreateTemporarySlot creates a temporary physical slot that reserves WAL
// at once, so the server cannot recycle a segment the backup will need
// before streaming starts. The server drops it when this connection ends.
func (c *Conn) CreateTemporarySlot(ctx context.Context, name string) error {
	sql := fmt.Sprintf("CREATE_REPLICATION_SLOT %s TEMPORARY PHYSICAL RESERVE_WAL", quoteIdent(name))
	if _, err := c.pg.Exec(ctx, sql).ReadAll(); err != nil {
		return fmt.Errorf("create temporary replication slot %s on %s: %w", name, c.target, err)
	}
	return nil
}

// SegmentSink receives a WAL segment: seg reads its bytes (the segment
// size of them) from the stream's spool file, and is valid only during
// the call. It may be read more than once.
type SegmentSink func(ctx context.Context, name string, seg *io.SectionReader) error

// WALStream streams WAL from a slot in whole segments. The segment being
// received is written to a spool file as it arrives, as pg_receivewal
// writes its .partial file, so memory does not grow with the segment size.
type WALStream struct {
	// Slot is the replication slot to stream from.
	Slot string
	// Timeline to stream.
	Timeline uint32
	// SegmentSize is the cluster's wal_segment_size.
	SegmentSize uint64
	// Sink stores a completed segment.
	Sink SegmentSink
	// StatusInterval is how often to report progress to the server. Each
	// report asks for a reply, so a healthy connection is never silent
	// for longer.
	StatusInterval time.Duration
	// IdleTimeout fails the stream when nothing at all arrives for this
	// long (0: never): the network path has stalled.
	IdleTimeout time.Duration
	// Status, if set, is told where the stream stands after every
	// message from the server; it must be quick.
	Status func(StreamStatus)
	// Partial, if set, receives the unfinished current segment when the
	// stream stops (zero-padded to the segment size, as pg_receivewal
	// writes .partial files), with a context that is not cancelled.
	Partial SegmentSink
	// SpoolDir is where the segment being received is spooled ("" for
	// os.TempDir()); it needs room for one segment.
	SpoolDir string
	// EndPartial, if set, lets Run stop as soon as it holds the WAL up
	// to the end LSN, though that falls inside a segment: the segment's
	// bytes before end go to EndPartial, under the segment's name. A
	// backup from a standby needs it: only a primary switches segments,
	// so on a standby of a quiet primary the last one may not complete
	// for hours.
	EndPartial SegmentSink
	// Waiting, if set, is told every WaitReportInterval while Run waits
	// for the last segment after the end is known: that wait can last
	// up to the end timeout (minutes) with nothing else to show.
	Waiting func(WALWait)
	// WaitReportInterval is how often Waiting is called (30 s).
	WaitReportInterval time.Duration
}

// WALWait says what a stream is waiting for once the backup has ended.
type WALWait struct {
	// Segment is the segment being completed; End the backup's end LSN,
	// which that segment must hold (or reach, with EndPartial).
	Segment string
	End     manifest.LSN
	// Received is the end of the WAL received so far; ServerEnd the end
	// of WAL on the server as it last reported it.
	Received, ServerEnd manifest.LSN
	// Waited is how long since the end was known; Timeout how long Run
	// waits in all.
	Waited, Timeout time.Duration
}

// StreamStatus is where a WAL stream stands.
type StreamStatus struct {
	// ServerEnd is the end of WAL on the server, as it last reported it.
	ServerEnd manifest.LSN
	// Received is the end of the WAL received; Stored the end of the
	// WAL stored: a segment boundary, or the end of a .partial stored at
	// the server's request (see Run).
	Received, Stored manifest.LSN
	// PendingSince is when the oldest WAL not yet stored was received;
	// zero when everything received is stored.
	PendingSince time.Time
}

// partialEvery bounds how often a server's requests for confirmation
// store the unfinished segment (see Run).
const partialEvery = 10 * time.Second

// Run streams from the segment holding from until the segment holding
// (end-1) is complete and stored, where end arrives on endCh once the
// backup has finished; with a nil endCh it streams until ctx ends. After end is known it waits at most endTimeout for
// the last segment; on a standby with little write traffic the last
// segment may take long to complete, and an unbounded wait would hang.
func (s *WALStream) Run(ctx context.Context, c *Conn, from manifest.LSN, endCh <-chan manifest.LSN, endTimeout time.Duration) (err error) {
	seg := s.SegmentSize
	segno := manifest.SegmentNo(from, seg)
	pos := manifest.LSN(segno * seg)
	// The segment being received lives in a spool file the size of a
	// segment: unwritten bytes read as zeros (the padding of a .partial)
	// and take no space.
	buf, err := spool.Create(s.SpoolDir, "pgstow-wal-*.segment")
	if err != nil {
		return fmt.Errorf("WAL streaming: %w", err)
	}
	defer buf.Close()
	if err := buf.Reset(int64(seg)); err != nil {
		return fmt.Errorf("WAL streaming: %w", err)
	}
	// A new reader for every call: a sink reads its own from the start.
	segment := func() *io.SectionReader { return io.NewSectionReader(buf, 0, int64(seg)) }
	err = pglogrepl.StartReplication(ctx, c.pg, s.Slot, pglogrepl.LSN(pos), pglogrepl.StartReplicationOptions{
		Timeline: int32(s.Timeline),
		Mode:     pglogrepl.PhysicalReplication,
	})
	if err != nil {
		return fmt.Errorf("start WAL streaming on %s at %s: %w", c.target, pos, err)
	}
	interval := s.StatusInterval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	filled := uint64(0) // bytes of the current segment received
	var flushed manifest.LSN = pos
	lastSegNeeded := uint64(0)
	var end manifest.LSN
	haveEnd := false
	var deadline, endKnown, nextWaitReport time.Time
	waitEvery := s.WaitReportInterval
	if waitEvery <= 0 {
		waitEvery = 30 * time.Second
	}
	nextStatus := time.Now().Add(interval)
	// storePartial stores the unfinished segment as .partial, but only
	// when it holds more than the stream started from: a slot resumed
	// after an earlier .partial (whose end is the slot's position, from)
	// must not replace it with a shorter one.
	storePartial := func(ctx context.Context) error {
		if s.Partial == nil || filled == 0 || pos <= from {
			return nil
		}
		name := manifest.SegmentName(s.Timeline, segno, seg)
		if err := s.Partial(ctx, name, segment()); err != nil {
			return fmt.Errorf("store partial segment %s: %w", name, err)
		}
		return nil
	}
	// When the stream fails (the server died, the connection dropped),
	// the WAL received of the unfinished segment may be the newest copy
	// anywhere: keep it, as on a clean stop (which stores it below).
	defer func() {
		if err != nil && ctx.Err() == nil {
			err = errors.Join(err, storePartial(context.WithoutCancel(ctx)))
		}
	}()

	sendStatus := func() error {
		return pglogrepl.SendStandbyStatusUpdate(ctx, c.pg, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: pglogrepl.LSN(pos),
			WALFlushPosition: pglogrepl.LSN(flushed),
			WALApplyPosition: pglogrepl.LSN(flushed),
			ReplyRequested:   s.IdleTimeout > 0,
		})
	}
	lastHeard := time.Now()
	var lastPartial time.Time
	var serverEnd manifest.LSN
	var pendingSince time.Time
	status := func() {
		if s.Status != nil {
			s.Status(StreamStatus{ServerEnd: serverEnd, Received: pos, Stored: flushed, PendingSince: pendingSince})
		}
	}
	for {
		if haveEnd && segno > lastSegNeeded {
			return nil
		}
		if haveEnd && s.EndPartial != nil && pos >= end {
			// segno == lastSegNeeded, and the segment holds end-1.
			name := manifest.SegmentName(s.Timeline, segno, seg)
			if err := s.EndPartial(ctx, name, io.NewSectionReader(buf, 0, int64(uint64(end)-segno*seg))); err != nil {
				return fmt.Errorf("store partial segment %s: %w", name, err)
			}
			return nil
		}
		if !haveEnd {
			select {
			case end = <-endCh:
				if end == 0 {
					return fmt.Errorf("WAL streaming: invalid end LSN")
				}
				haveEnd = true
				lastSegNeeded = manifest.PrevSegmentNo(end, seg)
				endKnown = time.Now()
				deadline = endKnown.Add(endTimeout)
				nextWaitReport = endKnown.Add(waitEvery)
				endCh = nil
				continue
			default:
			}
		}
		if haveEnd && s.Waiting != nil && !time.Now().Before(nextWaitReport) {
			s.Waiting(WALWait{Segment: manifest.SegmentName(s.Timeline, segno, seg), End: end, Received: pos, ServerEnd: serverEnd,
				Waited: time.Since(endKnown), Timeout: endTimeout})
			nextWaitReport = nextWaitReport.Add(waitEvery)
			if time.Until(nextWaitReport) <= 0 { // a slow store held the loop
				nextWaitReport = time.Now().Add(waitEvery)
			}
		}
		wait := time.Until(nextStatus)
		if haveEnd && time.Until(deadline) < wait {
			wait = time.Until(deadline)
		}
		if haveEnd && s.Waiting != nil && time.Until(nextWaitReport) < wait {
			wait = time.Until(nextWaitReport)
		}
		if wait <= 0 {
			if haveEnd && !time.Now().Before(deadline) {
				return fmt.Errorf("WAL segment %s did not complete within %s after the backup ended (received up to %s); check the server's log, or raise --wal-timeout",
					manifest.SegmentName(s.Timeline, segno, seg), endTimeout, pos)
			}
			if err := sendStatus(); err != nil {
				return fmt.Errorf("WAL streaming status to %s: %w", c.target, err)
			}
			nextStatus = time.Now().Add(interval)
			continue
		}
		// The end LSN arrives on endCh while we wait: poll it at least
		// every 100 ms.
		if !haveEnd && wait > 100*time.Millisecond {
			wait = 100 * time.Millisecond
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		msg, err := c.pg.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				if err := storePartial(context.WithoutCancel(ctx)); err != nil {
					return err
				}
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) || pgconnTimeout(err) {
				if s.IdleTimeout > 0 && time.Since(lastHeard) > s.IdleTimeout {
					return fmt.Errorf("WAL streaming from %s: %w: nothing from the server for %s, though every status report asks for a reply; the network path looks stalled (raise --io-timeout if the server is just slow)",
						c.target, ErrStalled, s.IdleTimeout)
				}
				continue
			}
			return fmt.Errorf("WAL streaming from %s: %w", c.target, err)
		}
		lastHeard = time.Now()
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("WAL streaming: %w", err)
				}
				if ka.ReplyRequested {
					nextStatus = time.Time{}
				}
				serverEnd = max(serverEnd, manifest.LSN(ka.ServerWALEnd))
				// A server asking for a reply when we hold everything it
				// sent is waiting for us to confirm it: a shutting-down
				// server waits for its walsenders' clients to flush all it
				// sent, and would hang on a segment we are still filling.
				// Store that segment as .partial and confirm it. The slot
				// then keeps the segment, which a restart streams again.
				// (Up to from, an earlier run's .partial holds it already.)
				if ka.ReplyRequested && s.Partial != nil && filled > 0 && flushed < pos &&
					pos >= manifest.LSN(ka.ServerWALEnd) && time.Since(lastPartial) >= partialEvery {
					if err := storePartial(ctx); err != nil {
						return err
					}
					flushed, lastPartial, pendingSince = pos, time.Now(), time.Time{}
				}
				status()
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("WAL streaming: %w", err)
				}
				if manifest.LSN(x.WALStart) != pos {
					return fmt.Errorf("WAL streaming: server sent data at %s, expected %s", manifest.LSN(x.WALStart), pos)
				}
				serverEnd = max(serverEnd, manifest.LSN(x.ServerWALEnd), manifest.LSN(x.WALStart)+manifest.LSN(len(x.WALData)))
				data := x.WALData
				if len(data) > 0 && pendingSince.IsZero() {
					pendingSince = lastHeard
				}
				for len(data) > 0 {
					k := min(uint64(len(data)), seg-filled)
					if _, err := buf.WriteAt(data[:k], int64(filled)); err != nil {
						return fmt.Errorf("WAL streaming: spool segment %s: %w", manifest.SegmentName(s.Timeline, segno, seg), err)
					}
					filled += k
					pos += manifest.LSN(k)
					data = data[k:]
					if filled == seg {
						name := manifest.SegmentName(s.Timeline, segno, seg)
						if err := s.Sink(ctx, name, segment()); err != nil {
							return err
						}
						// Empty the spool for the next segment: its
						// .partial must read zeros past what arrived.
						if err := buf.Reset(int64(seg)); err != nil {
							return fmt.Errorf("WAL streaming: %w", err)
						}
						segno++
						filled = 0
						flushed = pos
						pendingSince = time.Time{}
						if len(data) > 0 {
							pendingSince = lastHeard
						}
						nextStatus = time.Time{} // tell the server soon
					}
				}
				status()
			}
		case *pgproto3.CopyDone:
			return fmt.Errorf("WAL streaming: %w: server %s ended the stream at %s (it shut down, or its timeline changed)", ErrStreamEnded, c.target, pos)
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("WAL streaming from %s: %s", c.target, m.Message)
		case *pgproto3.NoticeResponse:
		default:
		}
	}
}

func pgconnTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	var t timeout
	return errors.As(err, &t) && t.Timeout()
}

// CreateSlot creates a persistent physical slot that reserves WAL now; an
// existing slot of that name is fine.
func (c *Conn) CreateSlot(ctx context.Context, name string) error {
	sql := fmt.Sprintf("CREATE_REPLICATION_SLOT %s PHYSICAL RESERVE_WAL", quoteIdent(name))
	_, err := c.pg.Exec(ctx, sql).ReadAll()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object
		return nil
	}
	if err != nil {
		return fmt.Errorf("create replication slot %s on %s: %w", name, c.target, err)
	}
	return nil
}

// ReadSlot returns where a physical slot's reserved WAL starts, and on
// which timeline; ok is false when the slot does not exist or holds no
// position yet.
func (c *Conn) ReadSlot(ctx context.Context, name string) (lsn manifest.LSN, tli uint32, ok bool, err error) {
	res, err := c.pg.Exec(ctx, "READ_REPLICATION_SLOT "+quoteIdent(name)).ReadAll()
	if err != nil {
		return 0, 0, false, fmt.Errorf("read replication slot %s on %s: %w", name, c.target, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 3 {
		return 0, 0, false, fmt.Errorf("read replication slot %s on %s: unexpected result", name, c.target)
	}
	row := res[0].Rows[0]
	if row[0] == nil || row[1] == nil || row[2] == nil {
		return 0, 0, false, nil
	}
	if lsn, err = manifest.ParseLSN(string(row[1])); err != nil {
		return 0, 0, false, fmt.Errorf("read replication slot %s: %w", name, err)
	}
	t, err := parseUint(row[2], 32)
	if err != nil {
		return 0, 0, false, fmt.Errorf("read replication slot %s: timeline: %w", name, err)
	}
	return lsn, uint32(t), true, nil
}
