//go:build race

package uploader

// raceEnabled: the race detector makes sync.Pool drop items on purpose,
// so pooled buffers (pierrec/lz4's among them) are allocated again.
const raceEnabled = true
