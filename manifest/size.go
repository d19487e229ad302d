package manifest

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize reads a positive byte count with an optional unit, as a user
// types it (--chunk-size 16MB, part_size=16MiB in a repository URL) and as
// PostgreSQL shows one (wal_segment_size "16MB"): B, K, M, G, T, each also
// written KB or KiB and so on, in any case, all powers of 1024 as in
// PostgreSQL and as part and block sizes are. Spaces around the number
// and before the unit are allowed ("20 MB"). It is the inverse of
// HumanBytes, and the one size parser of the flags, the URLs and the
// replication connection.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a positive size: a number with an optional unit, e.g. 16MiB", s)
	}
	unit := strings.TrimSpace(t[i:])
	var shift uint
	switch strings.ToUpper(unit) {
	case "", "B":
	case "K", "KB", "KIB":
		shift = 10
	case "M", "MB", "MIB":
		shift = 20
	case "G", "GB", "GIB":
		shift = 30
	case "T", "TB", "TIB":
		shift = 40
	default:
		return 0, fmt.Errorf("size %q: unknown unit %q (use K, M, G or T, all binary)", s, unit)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > (1<<62)>>shift {
		return 0, fmt.Errorf("size %q: out of range", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q: must be positive", s)
	}
	return n << shift, nil
}
