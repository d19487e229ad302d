package walarchive

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// Continuity is the result of CheckContinuity.
type Continuity struct {
	From      string   `json:"from"` // first segment needed (the oldest backup's)
	To        string   `json:"to"`   // newest archived segment on the newest timeline
	Timelines []uint32 `json:"timelines"`
	Segments  int      `json:"segments"` // segments checked
	Missing   []string `json:"missing"`  // every missing segment or history file
}

// CheckContinuity checks that the WAL archive holds every segment from the
// oldest backup's first one to the newest archived one, following the
// timeline history files across timeline switches: on each timeline up to
// the segment before its switch point, then on the next from the switch
// segment. Missing files are listed, not just counted.
func CheckContinuity(ctx context.Context, repo *repository.Repository) (*Continuity, error) {
	backups, err := repo.Backups(ctx)
	if err != nil {
		return nil, err
	}
	if len(backups) == 0 {
		return nil, fmt.Errorf("%w: %s has no backup to start the WAL check from", repository.ErrNoBackup, repo)
	}
	oldest := backups[0]
	seg := oldest.WALSegmentSize
	have := map[string]bool{}
	newestTLI := oldest.StartTimeline
	for w, err := range repo.WALFiles(ctx) {
		if err != nil {
			return nil, err
		}
		have[w.Name] = true
		if tli, _, err := manifest.ParseSegmentName(w.Name, seg); err == nil && tli > newestTLI {
			newestTLI = tli
		}
	}
	type step struct {
		tli uint32
		at  manifest.LSN // 0 for the last timeline
	}
	var steps []step
	c := &Continuity{}
	if newestTLI > oldest.StartTimeline {
		hist := manifest.HistoryFileName(newestTLI)
		var data bytes.Buffer
		_, err := repo.ReadWAL(ctx, chunker.NewDecompressor(), hist, repository.WALWant{SegmentSize: seg}, &data)
		if err != nil {
			c.Missing = append(c.Missing, hist)
			newestTLI = oldest.StartTimeline // check what we can
		} else {
			sw, err := parseHistory(data.Bytes())
			if err != nil {
				return nil, fmt.Errorf("%s in %s: %w", hist, repo, err)
			}
			for _, s := range sw {
				if s.tli >= oldest.StartTimeline {
					steps = append(steps, step{s.tli, s.lsn})
				}
			}
		}
	}
	steps = append(steps, step{tli: newestTLI})
	cur := manifest.SegmentNo(oldest.StartLSN, seg)
	c.From = manifest.SegmentName(steps[0].tli, cur, seg)
	for _, s := range steps {
		c.Timelines = append(c.Timelines, s.tli)
		last := cur
		if s.at != 0 {
			if sw := manifest.SegmentNo(s.at, seg); sw > 0 {
				last = sw - 1
			}
		} else {
			for name := range have {
				if tli, no, err := manifest.ParseSegmentName(name, seg); err == nil && tli == s.tli && no > last {
					last = no
				}
			}
			c.To = manifest.SegmentName(s.tli, last, seg)
		}
		for no := cur; no <= last; no++ {
			name := manifest.SegmentName(s.tli, no, seg)
			c.Segments++
			if !have[name] {
				c.Missing = append(c.Missing, name)
			}
		}
		if s.at != 0 {
			cur = manifest.SegmentNo(s.at, seg)
		}
	}
	sort.Strings(c.Missing)
	return c, nil
}

type switchPoint struct {
	tli uint32
	lsn manifest.LSN
}

// parseHistory reads a timeline history file: "parentTLI switchLSN reason"
// per line, comments after #.
func parseHistory(data []byte) ([]switchPoint, error) {
	var out []switchPoint
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("malformed timeline in %q", line)
		}
		lsn, err := manifest.ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("malformed switch point in %q: %w", line, err)
		}
		out = append(out, switchPoint{uint32(tli), lsn})
	}
	return out, sc.Err()
}
