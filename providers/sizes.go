package providers

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize reads a positive byte count with an optional unit, as used in
// repository URLs (part_size=16MiB): B, K, M, G, T, each also written KB or
// KiB and so on, all powers of 1024, since part and block sizes are.
func ParseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a positive size: a number with an optional unit, e.g. 16MiB", s)
	}
	var shift uint
	switch strings.ToUpper(s[i:]) {
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
		return 0, fmt.Errorf("size %q: unknown unit %q (use K, M, G or T, all binary)", s, s[i:])
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n > (1<<62)>>shift {
		return 0, fmt.Errorf("size %q: out of range", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q: must be positive", s)
	}
	return n << shift, nil
}

// PartSize is the part (or block) size for a multipart upload of size
// bytes: the configured one, or, when that would need more than maxParts
// parts, the smallest whole number of MiB that fits the object into
// maxParts. Static part sizes are what broke other tools' uploads of very
// large files. Callers check the result against their store's largest
// part.
func PartSize(size, configured int64, maxParts int) int64 {
	const mib = 1 << 20
	ps := configured
	if need := (size + int64(maxParts) - 1) / int64(maxParts); need > ps {
		ps = (need + mib - 1) / mib * mib
	}
	return ps
}
