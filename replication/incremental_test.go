package replication

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func TestParseGUCDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"10d", 10 * 24 * time.Hour, ""},
		{"30min", 30 * time.Minute, ""},
		{"2h", 2 * time.Hour, ""},
		{"1500ms", 1500 * time.Millisecond, ""},
		{"0", 0, ""},
		{"7", 7 * time.Minute, ""}, // the base unit
		{"", 0, "not a duration"},
		{"d", 0, "not a duration"},
		{"3 fortnights", 0, "unknown time unit"},
		{"99999999999999999d", 0, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseGUCDuration(tt.in, time.Minute)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestIncrementalRefusal(t *testing.T) {
	tests := []struct {
		code, msg string
		want      bool
	}{
		{"55000", "incremental backups cannot be taken unless WAL summarization is enabled", true},
		{"55000", "WAL summaries are required on timeline 1 from 0/2000028 to 0/4000028, but no summaries for that timeline and LSN range exist", true},
		{"55000", "timeline 2 found in manifest, but not in this server's history", true},
		{"42601", "syntax error", true}, // a server without INCREMENTAL
		{"XX000", "could not parse backup manifest: manifest checksum mismatch", true},
		{"XX000", "system identifier in backup manifest is 1, but database system identifier is 2", true},
		{"58P01", "could not open file \"base/1/1259\": No such file or directory", false},
		{"57014", "canceling statement due to user request", false},
		{"53100", "could not write to file: No space left on device", false},
	}
	for _, tt := range tests {
		if got := incrementalRefusal(&pgconn.PgError{Code: tt.code, Message: tt.msg}); got != tt.want {
			t.Errorf("%s %q: refusal %v, want %v", tt.code, tt.msg, got, tt.want)
		}
	}
}

// TestBaseBackupRefusedKeepsConnection: a server that refuses an
// INCREMENTAL BASE_BACKUP before its stream leaves the connection usable
// (the backup then takes a full on it), and the error matches
// ErrIncrementalRefused while keeping the server's *pgconn.PgError.
func TestBaseBackupRefusedKeepsConnection(t *testing.T) {
	tests := []struct {
		name        string
		incremental bool
		code, msg   string
		refused     bool
	}{
		{"summaries missing", true, "55000", "WAL summaries are required on timeline 1 from 0/2000028 to 0/4000028, but no summaries for that timeline and LSN range exist", true},
		{"other error of an incremental", true, "58P01", "could not open file", false},
		{"error of a full", false, "55000", "a backup is already in progress", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, srv := readThroughConn(t, 170000)
			served := make(chan error, 1)
			go func() {
				be := pgproto3.NewBackend(srv, srv)
				msg, err := be.Receive()
				if err != nil {
					served <- err
					return
				}
				q, ok := msg.(*pgproto3.Query)
				if !ok || strings.Contains(q.String, "INCREMENTAL") != tt.incremental {
					served <- errors.New("unexpected first message")
					return
				}
				var sb streamBuilder
				sb.notice("a notice before the error")
				sb.msg('E', []byte("SERROR\x00VERROR\x00C"+tt.code+"\x00M"+tt.msg+"\x00\x00"))
				sb.msg('Z', []byte("I"))
				if _, err := srv.Write(sb.Bytes()); err != nil {
					served <- err
					return
				}
				// The same connection then runs SHOW.
				if _, err := be.Receive(); err != nil {
					served <- err
					return
				}
				sb.Reset()
				sb.msg('T', []byte{0, 0})
				sb.dataRow("8192")
				sb.msg('C', []byte("SHOW\x00"))
				sb.msg('Z', []byte("I"))
				_, err = srv.Write(sb.Bytes())
				served <- err
			}()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var notices int
			bb, err := c.BaseBackup(ctx, BackupOptions{Incremental: tt.incremental, OnNotice: func(*pgconn.PgError) { notices++ }})
			if err == nil {
				bb.Close()
				t.Fatal("BASE_BACKUP succeeded")
			}
			if got := errors.Is(err, ErrIncrementalRefused); got != tt.refused {
				t.Errorf("errors.Is(%v, ErrIncrementalRefused) = %v, want %v", err, got, tt.refused)
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != tt.code || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %v does not keep the server's", err)
			}
			if notices != 1 {
				t.Errorf("%d notices, want 1", notices)
			}
			if v, err := c.showInt(ctx, "block_size"); err != nil || v != 8192 {
				t.Fatalf("SHOW on the connection after the refusal: %d, %v", v, err)
			}
			if err := <-served; err != nil {
				t.Fatalf("fake server: %v", err)
			}
		})
	}
}

// TestIncrementalNeedsPostgreSQL17: before 17 neither command is sent.
func TestIncrementalNeedsPostgreSQL17(t *testing.T) {
	c, _ := readThroughConn(t, 150004)
	if err := c.UploadManifest(t.Context(), strings.NewReader("{}")); !errors.Is(err, ErrIncrementalRefused) || !strings.Contains(err.Error(), "PostgreSQL 15.4") {
		t.Errorf("UploadManifest: %v", err)
	}
	if _, err := c.BaseBackup(t.Context(), BackupOptions{Incremental: true}); !errors.Is(err, ErrIncrementalRefused) || !strings.Contains(err.Error(), "17 or newer") {
		t.Errorf("BaseBackup: %v", err)
	}
}

// readThroughConn is a Conn of the given server version to an in-memory
// peer that plays the server, reading as Connect's do (readThrough).
func readThroughConn(t *testing.T, version int) (*Conn, net.Conn) {
	t.Helper()
	cli, srv := net.Pipe()
	t.Cleanup(func() { cli.Close(); srv.Close() })
	cfg, err := pgconn.ParseConfig("host=/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{target: "fake:5432", serverVersion: version}
	c.readThrough(cfg)
	c.pg, err = pgconn.Construct(&pgconn.HijackedConn{Conn: cli, Config: cfg, TxStatus: 'I', ParameterStatuses: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

// TestUploadManifestReadError: a manifest that cannot be read is our
// failure, not the server's refusal.
func TestUploadManifestReadError(t *testing.T) {
	c, srv := readThroughConn(t, 170000)
	go func() {
		be := pgproto3.NewBackend(srv, srv)
		for {
			msg, err := be.Receive()
			if err != nil {
				return
			}
			var sb streamBuilder
			switch m := msg.(type) {
			case *pgproto3.Query:
				sb.msg('G', []byte{0, 0, 0})
			case *pgproto3.CopyFail:
				sb.msg('E', []byte("SERROR\x00C57014\x00MCOPY from stdin failed: "+m.Message+"\x00\x00"))
				sb.msg('Z', []byte("I"))
			}
			if sb.Len() > 0 {
				if _, err := srv.Write(sb.Bytes()); err != nil {
					return
				}
			}
		}
	}()
	boom := errors.New("storage is down")
	err := c.UploadManifest(t.Context(), io.MultiReader(strings.NewReader("{"), iotestErr{boom}))
	if !errors.Is(err, boom) || errors.Is(err, ErrIncrementalRefused) {
		t.Fatalf("UploadManifest: %v", err)
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }
