package providers

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
