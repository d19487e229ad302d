package replication

// STAND-IN for branch i15-synth only: the replication helper's branch
// (i15-repl) defines all of this for real. Delete this file when merging
// (the duplicate declarations make the build fail until then).

import (
	"context"
	"errors"
	"io"
)

// ErrIncrementalRefused: see i15-repl.
var ErrIncrementalRefused = errors.New("the server refused the incremental backup")

// Settings: see i15-repl.
type Settings struct {
	ServerVersion int
	SummarizeWAL  bool
	BlockSize     int
	SegmentSize   int64
}

// RelsegBlocks: see i15-repl.
func (s Settings) RelsegBlocks() int {
	if s.BlockSize == 0 {
		return 0
	}
	return int(s.SegmentSize / int64(s.BlockSize))
}

var errStandIn = errors.New("incremental backups need the replication branch i15-repl")

// UploadManifest: see i15-repl.
func (c *Conn) UploadManifest(context.Context, io.Reader) error { return errStandIn }

// Settings: see i15-repl. The stand-in reports a server that cannot take
// incremental backups.
func (c *Conn) Settings(context.Context) (Settings, error) {
	return Settings{ServerVersion: c.serverVersion}, errStandIn
}
