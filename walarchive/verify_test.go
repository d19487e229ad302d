package walarchive

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
)

func TestCheckContinuity(t *testing.T) {
	const seg = 16 << 20
	name := func(tli uint32, no uint64) string { return manifest.SegmentName(tli, no, seg) }
	tests := []struct {
		name    string
		stored  []string
		history string // 00000002.history content, "" for none
		missing []string
		to      string
	}{
		{"continuous", []string{name(1, 3), name(1, 4), name(1, 5)}, "", nil, name(1, 5)},
		{"gap", []string{name(1, 3), name(1, 5)}, "", []string{name(1, 4)}, name(1, 5)},
		{"across a switch", []string{name(1, 3), name(1, 4), name(2, 5), name(2, 6)}, "1\t0/5000100\tno recovery target specified\n", nil, name(2, 6)},
		{"gap on the old timeline", []string{name(1, 3), name(2, 5), name(2, 6)}, "1\t0/5000100\treason\n", []string{name(1, 4)}, name(2, 6)},
		{"history missing", []string{name(1, 3), name(2, 5)}, "-", []string{"00000002.history"}, name(1, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := repository.New(mem.New())
			ctx := t.Context()
			comp := chunker.NewCompressor()
			for _, n := range tt.stored {
				repo.PutWAL(ctx, comp, n, make([]byte, 16))
			}
			if tt.history != "" && tt.history != "-" {
				repo.PutWAL(ctx, comp, "00000002.history", []byte(tt.history))
			}
			b := &manifest.Backup{
				FormatVersion: manifest.FormatVersion, ID: "20261123T100000Z", SystemID: "1",
				StartTimeline: 1, EndTimeline: 1, StartLSN: 0x3000028, EndLSN: 0x3000100, WALSegmentSize: seg,
				WAL:      []manifest.WALSegment{{Name: name(1, 3), SHA256: "", StoredSize: 1}},
				Archives: []manifest.Archive{{Name: "base.tar"}},
				Timings:  manifest.Timings{Started: time.Unix(1, 0).UTC(), Finished: time.Unix(2, 0).UTC()},
			}
			if err := repo.Commit(ctx, b, strings.NewReader("pgm")); err != nil {
				t.Fatal(err)
			}
			c, err := CheckContinuity(ctx, repo)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Missing, tt.missing) || c.To != tt.to || c.From != name(1, 3) {
				t.Fatalf("got from %s to %s missing %v; want to %s missing %v", c.From, c.To, c.Missing, tt.to, tt.missing)
			}
		})
	}
}
