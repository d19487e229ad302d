package pgdata

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestSystemIdentifier(t *testing.T) {
	control := func(sysid uint64, version uint32, size int) []byte {
		b := make([]byte, size)
		binary.LittleEndian.PutUint64(b, sysid)
		binary.LittleEndian.PutUint32(b[8:], version)
		return b
	}
	tests := []struct {
		name string
		data []byte
		want uint64
		ok   bool
	}{
		{"PostgreSQL 15", control(7311111111111111111, 1300, 8192), 7311111111111111111, true},
		{"PostgreSQL 18", control(7500000000000000001, 1800, 8192), 7500000000000000001, true},
		{"just the two fields", control(42, 1300, 12), 42, true},
		{"empty", nil, 0, false},
		{"too short", control(42, 1300, 12)[:11], 0, false},
		{"version too old", control(42, 899, 8192), 0, false},
		{"version too new", control(42, 10000, 8192), 0, false},
		{"other byte order", binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, 42), 1300), 0, false},
		{"zeros", make([]byte, 8192), 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SystemIdentifier(tc.data)
			if tc.ok {
				if err != nil || got != tc.want {
					t.Errorf("SystemIdentifier = %d, %v; want %d", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrNotControlFile) {
				t.Errorf("SystemIdentifier = %d, %v; want ErrNotControlFile", got, err)
			}
		})
	}
}
