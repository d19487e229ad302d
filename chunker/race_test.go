//go:build race

package chunker

// raceEnabled reports a -race build, where sync.Pool drops buffers on
// purpose and the heavier tests test less.
const raceEnabled = true
