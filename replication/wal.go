package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgstow/pgstow/manifest"
)

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

// SegmentSink receives each completed WAL segment. data is only valid
// during the call.
type SegmentSink func(ctx context.Context, name string, data []byte) error

// WALStream streams WAL from a slot in whole segments.
type WALStream struct {
	// Slot is the replication slot to stream from.
	Slot string
	// Timeline to stream.
	Timeline uint32
	// SegmentSize is the cluster's wal_segment_size.
	SegmentSize uint64
	// Sink stores a completed segment.
	Sink SegmentSink
	// StatusInterval is how often to report progress to the server.
	StatusInterval time.Duration
}

// Run streams from the segment holding from until the segment holding
// (end-1) is complete and stored, where end arrives on endCh once the
// backup has finished. After end is known it waits at most endTimeout for
// the last segment; on a standby with little write traffic the last
// segment may take long to complete, and an unbounded wait would hang.
func (s *WALStream) Run(ctx context.Context, c *Conn, from manifest.LSN, endCh <-chan manifest.LSN, endTimeout time.Duration) error {
	seg := s.SegmentSize
	segno := manifest.SegmentNo(from, seg)
	pos := manifest.LSN(segno * seg)
	err := pglogrepl.StartReplication(ctx, c.pg, s.Slot, pglogrepl.LSN(pos), pglogrepl.StartReplicationOptions{
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
	buf := make([]byte, seg)
	filled := uint64(0) // bytes of the current segment received
	var flushed manifest.LSN = pos
	lastSegNeeded := uint64(0)
	haveEnd := false
	var deadline time.Time
	nextStatus := time.Now().Add(interval)

	sendStatus := func() error {
		return pglogrepl.SendStandbyStatusUpdate(ctx, c.pg, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: pglogrepl.LSN(pos),
			WALFlushPosition: pglogrepl.LSN(flushed),
			WALApplyPosition: pglogrepl.LSN(flushed),
		})
	}
	for {
		if haveEnd && segno > lastSegNeeded {
			return nil
		}
		if !haveEnd {
			select {
			case end := <-endCh:
				if end == 0 {
					return fmt.Errorf("WAL streaming: invalid end LSN")
				}
				haveEnd = true
				lastSegNeeded = manifest.PrevSegmentNo(end, seg)
				deadline = time.Now().Add(endTimeout)
				endCh = nil
				continue
			default:
			}
		}
		wait := time.Until(nextStatus)
		if haveEnd && time.Until(deadline) < wait {
			wait = time.Until(deadline)
		}
		if wait <= 0 {
			if haveEnd && !time.Now().Before(deadline) {
				return fmt.Errorf("WAL segment %s did not complete within %s after the backup ended (received up to %s); on a standby, generate WAL on the primary or raise --wal-timeout",
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
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) || pgconnTimeout(err) {
				continue
			}
			return fmt.Errorf("WAL streaming from %s: %w", c.target, err)
		}
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
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("WAL streaming: %w", err)
				}
				if manifest.LSN(x.WALStart) != pos {
					return fmt.Errorf("WAL streaming: server sent data at %s, expected %s", manifest.LSN(x.WALStart), pos)
				}
				data := x.WALData
				for len(data) > 0 {
					k := copy(buf[filled:], data)
					filled += uint64(k)
					pos += manifest.LSN(k)
					data = data[k:]
					if filled == seg {
						name := manifest.SegmentName(s.Timeline, segno, seg)
						if err := s.Sink(ctx, name, buf); err != nil {
							return err
						}
						segno++
						filled = 0
						flushed = pos
						nextStatus = time.Time{} // tell the server soon
					}
				}
			}
		case *pgproto3.CopyDone:
			return fmt.Errorf("WAL streaming: server %s ended the stream at %s (timeline switch?)", c.target, pos)
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
