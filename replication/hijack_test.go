package replication

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgstow/pgstow/manifest"
)

// TestBaseBackupAfterSlowWrite: when a query's write takes longer than
// pgconn's 15 ms slow-write timer (a busy client machine), pgconn starts
// a background read, which it stops only after that read returns, so it
// is still pending when the connection is taken over for BASE_BACKUP.
// The reply must still reach the stream in full and in order (it once
// lost its first bytes to that read: "protocol error: message '\x00'").
func TestBaseBackupAfterSlowWrite(t *testing.T) {
	// In a bubble, the 100 ms the server waits is fake time, past the
	// timer at once.
	synctest.Test(t, func(t *testing.T) {
		cli, srv := net.Pipe()
		defer srv.Close()
		cfg, err := pgconn.ParseConfig("host=/nonexistent")
		if err != nil {
			t.Fatal(err)
		}
		c := &Conn{target: "fake:5432"}
		c.readThrough(cfg)
		c.pg, err = pgconn.Construct(&pgconn.HijackedConn{Conn: cli, Config: cfg, TxStatus: 'I', ParameterStatuses: map[string]string{}})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()

		served := make(chan error, 1)
		go func() {
			// The server takes the first byte of the client's SHOW, then
			// leaves the rest unread for longer than the timer, so the
			// client's write is slow and its background read starts; it
			// answers at once, and takes the rest of the query only after the
			// answer was read: the background read is pending by then.
			first := make([]byte, 1)
			if _, err := io.ReadFull(srv, first); err != nil {
				served <- err
				return
			}
			time.Sleep(100 * time.Millisecond)
			var sb streamBuilder
			sb.msg('T', []byte{0, 0})
			sb.dataRow("150000")
			sb.msg('C', []byte("SHOW\x00"))
			sb.msg('Z', []byte("I"))
			if _, err := srv.Write(sb.Bytes()); err != nil {
				served <- err
				return
			}
			be := pgproto3.NewBackend(io.MultiReader(bytes.NewReader(first), srv), srv)
			if _, err := be.Receive(); err != nil { // the rest of SHOW
				served <- err
				return
			}
			if _, err := be.Receive(); err != nil { // BASE_BACKUP
				served <- err
				return
			}
			sb.Reset()
			sb.msg('T', []byte{0, 0})
			sb.dataRow("0/3000028", "1")
			sb.msg('C', []byte("SELECT\x00"))
			sb.msg('T', []byte{0, 0})
			sb.msg('C', []byte("SELECT\x00"))
			sb.msg('H', []byte{0, 0, 0})
			_, err := srv.Write(sb.Bytes())
			served <- err
		}()

		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if v, err := c.showInt(ctx, "server_version_num"); err != nil || v != 150000 {
			t.Fatalf("SHOW: %d, %v", v, err)
		}
		bb, err := c.BaseBackup(ctx, BackupOptions{Label: "t"})
		if err != nil {
			t.Fatalf("BASE_BACKUP after a slow write: %v", err)
		}
		defer bb.Close()
		if st := bb.Start(); st.LSN != manifest.LSN(0x3000028) || st.Timeline != 1 {
			t.Errorf("start %+v, want 0/3000028 on timeline 1", st)
		}
		if err := <-served; err != nil {
			t.Fatalf("fake server: %v", err)
		}
	})
}
