package replication

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgstow/pgstow/manifest"
)

// pipeConn returns a Conn whose server end is srv, for a fake walsender.
func pipeConn(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	cli, srv := net.Pipe()
	cfg, err := pgconn.ParseConfig("host=/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := pgconn.Construct(&pgconn.HijackedConn{Conn: cli, Config: cfg, TxStatus: 'I', ParameterStatuses: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	return &Conn{pg: pg, target: "fake:5432"}, srv
}

// fakeWalsender answers START_REPLICATION, sends data at the segment
// start, then only a keepalive every 5 s, as a server whose WAL does not
// advance; it reads (and drops) the client's status reports.
func fakeWalsender(srv net.Conn, start uint64, data []byte) {
	be := pgproto3.NewBackend(srv, srv)
	if _, err := be.Receive(); err != nil {
		return
	}
	be.Send(&pgproto3.CopyBothResponse{})
	x := make([]byte, 25, 25+len(data))
	x[0] = pglogrepl.XLogDataByteID
	binary.BigEndian.PutUint64(x[1:], start)
	binary.BigEndian.PutUint64(x[9:], start+uint64(len(data)))
	be.Send(&pgproto3.CopyData{Data: append(x, data...)})
	if be.Flush() != nil {
		return
	}
	go func() {
		for {
			if _, err := be.Receive(); err != nil {
				return
			}
		}
	}()
	for {
		time.Sleep(5 * time.Second)
		k := make([]byte, 18)
		k[0] = pglogrepl.PrimaryKeepaliveMessageByteID
		binary.BigEndian.PutUint64(k[1:], start+uint64(len(data)))
		be.Send(&pgproto3.CopyData{Data: k})
		if be.Flush() != nil {
			return
		}
	}
}

// TestWALStreamWaitReports: while the stream waits for the last segment
// after the backup ended, it says every 30 s which segment, received up
// to where, for how long so far and the timeout, and gives up at the
// timeout naming the segment.
func TestWALStreamWaitReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const segSize = 1 << 20
		start := uint64(3 * segSize)
		c, srv := pipeConn(t)
		var wg sync.WaitGroup
		wg.Go(func() { fakeWalsender(srv, start, make([]byte, 4096)) })
		defer func() { c.pg.Conn().Close(); srv.Close(); wg.Wait() }()

		var reports []WALWait
		endCh := make(chan manifest.LSN, 1)
		endCh <- manifest.LSN(start + 8192)
		began := time.Now()
		ws := &WALStream{Slot: "s", Timeline: 1, SegmentSize: segSize, SpoolDir: t.TempDir(),
			Sink: func(_ context.Context, name string, _ *io.SectionReader) error {
				t.Errorf("segment %s stored", name)
				return nil
			},
			Waiting: func(w WALWait) { reports = append(reports, w) },
		}
		err := ws.Run(t.Context(), c, manifest.LSN(start), endCh, 2*time.Minute)
		if err == nil || !strings.Contains(err.Error(), "000000010000000000000003 did not complete within 2m0s") {
			t.Fatalf("Run: %v, want the timeout naming the segment", err)
		}
		if took := time.Since(began); took < 2*time.Minute || took > 2*time.Minute+time.Second {
			t.Errorf("Run gave up after %s, want 2m", took)
		}
		if len(reports) < 3 {
			t.Fatalf("%d wait reports in 2 minutes, want one every 30 s: %+v", len(reports), reports)
		}
		for i, w := range reports {
			want := WALWait{Segment: "000000010000000000000003", End: manifest.LSN(start + 8192), Received: manifest.LSN(start + 4096),
				ServerEnd: manifest.LSN(start + 4096), Waited: time.Duration(i+1) * 30 * time.Second, Timeout: 2 * time.Minute}
			if w != want {
				t.Errorf("report %d: %+v, want %+v", i, w, want)
			}
		}
	})
}
