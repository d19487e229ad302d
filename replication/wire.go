package replication

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
)

// maxSmallMessage bounds the messages we read into memory whole (everything
// but archive data, which is streamed). A hostile or broken server cannot
// make us allocate more than this for one message.
const maxSmallMessage = 16 << 20

// wireReader decodes backend protocol messages from a buffered socket. It
// owns one reusable buffer for small messages; CopyData payloads are read
// by the caller straight into its own buffers.
type wireReader struct {
	br    *bufio.Reader
	small []byte
}

func newWireReader(r io.Reader, size int) *wireReader {
	return &wireReader{br: bufio.NewReaderSize(r, size)}
}

// header reads a message's type byte and body length.
func (w *wireReader) header() (byte, int, error) {
	var h [5]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return 0, 0, eofIsUnexpected(err)
	}
	n := int(int32(binary.BigEndian.Uint32(h[1:])))
	if n < 4 {
		return 0, 0, fmt.Errorf("protocol error: message %q with length %d", h[0], n)
	}
	return h[0], n - 4, nil
}

// body reads a whole message body of n bytes into the reusable buffer.
func (w *wireReader) body(n int) ([]byte, error) {
	if n > maxSmallMessage {
		return nil, fmt.Errorf("protocol error: message of %d bytes exceeds the %d-byte limit", n, maxSmallMessage)
	}
	if cap(w.small) < n {
		w.small = make([]byte, n)
	}
	b := w.small[:n]
	if _, err := io.ReadFull(w.br, b); err != nil {
		return nil, eofIsUnexpected(err)
	}
	return b, nil
}

func eofIsUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseError decodes an ErrorResponse or NoticeResponse body.
func parseError(b []byte) *pgconn.PgError {
	e := &pgconn.PgError{}
	for len(b) > 0 && b[0] != 0 {
		code := b[0]
		b = b[1:]
		s, rest, ok := cstring(b)
		if !ok {
			break
		}
		b = rest
		switch code {
		case 'S':
			e.Severity = s
		case 'V':
			e.SeverityUnlocalized = s
		case 'C':
			e.Code = s
		case 'M':
			e.Message = s
		case 'D':
			e.Detail = s
		case 'H':
			e.Hint = s
		}
	}
	if e.Message == "" {
		e.Message = "server sent an error without a message"
	}
	return e
}

// cstring splits a NUL-terminated string off b.
func cstring(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// parseDataRow decodes a DataRow; nil entries are SQL NULLs.
func parseDataRow(b []byte) ([][]byte, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("protocol error: short DataRow")
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	cols := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		if len(b) < 4 {
			return nil, fmt.Errorf("protocol error: short DataRow column %d", i)
		}
		l := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if l < 0 {
			cols = append(cols, nil)
			continue
		}
		if l > len(b) {
			return nil, fmt.Errorf("protocol error: DataRow column %d overruns the message", i)
		}
		cols = append(cols, append([]byte(nil), b[:l]...))
		b = b[l:]
	}
	return cols, nil
}

// resultSet collects the rows of one simple-query result.
type resultSet struct {
	rows [][][]byte
}

// readResultSet reads RowDescription, DataRows and CommandComplete,
// tolerating notices; it stops early at CopyOutResponse or ReadyForQuery
// and reports which message ended it.
func (w *wireReader) readResultSet(onNotice func(*pgconn.PgError)) (resultSet, byte, error) {
	var rs resultSet
	for {
		typ, n, err := w.header()
		if err != nil {
			return rs, 0, err
		}
		b, err := w.body(n)
		if err != nil {
			return rs, 0, err
		}
		switch typ {
		case 'T': // RowDescription
		case 'D':
			row, err := parseDataRow(b)
			if err != nil {
				return rs, 0, err
			}
			rs.rows = append(rs.rows, row)
		case 'C', 'H', 'Z':
			return rs, typ, nil
		case 'N':
			if onNotice != nil {
				onNotice(parseError(b))
			}
		case 'E':
			return rs, typ, parseError(b)
		case 'S', 'A', 'K': // ParameterStatus, Notification, BackendKeyData
		default:
			return rs, typ, fmt.Errorf("protocol error: unexpected message %q", typ)
		}
	}
}

func parseUint(b []byte, bits int) (uint64, error) {
	return strconv.ParseUint(string(b), 10, bits)
}
