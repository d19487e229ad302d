package pgdata

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrNotControlFile is returned for bytes that cannot be a pg_control.
var ErrNotControlFile = errors.New("not a PostgreSQL pg_control file")

// controlMinBytes is what SystemIdentifier reads: system_identifier
// (uint64) and pg_control_version (uint32), the first two fields of
// ControlFileData in every release.
const controlMinBytes = 12

// SystemIdentifier returns the cluster's system identifier recorded in a
// global/pg_control file. It checks pg_control_version is one PostgreSQL
// has written (PostgreSQL 9.x to 18 use 903..1800), which refuses a file
// of another kind or of the other byte order; the CRC is not checked, as
// its offset depends on the release and a delta restore rewrites the file
// anyway.
func SystemIdentifier(pgControl []byte) (uint64, error) {
	if len(pgControl) < controlMinBytes {
		return 0, fmt.Errorf("%w: %d bytes", ErrNotControlFile, len(pgControl))
	}
	v := binary.LittleEndian.Uint32(pgControl[8:12])
	if v < 900 || v > 9999 {
		return 0, fmt.Errorf("%w: pg_control_version %d", ErrNotControlFile, v)
	}
	return binary.LittleEndian.Uint64(pgControl[:8]), nil
}
