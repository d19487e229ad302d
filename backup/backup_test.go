package backup

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/repository/repotest"
)

// recorder keeps the messages and attributes of every log record.
type recorder struct {
	mu   sync.Mutex
	recs []logRec
}

type logRec struct {
	at    time.Time
	msg   string
	attrs map[string]string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	l := logRec{at: time.Now(), msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool { l.attrs[a.Key] = a.Value.String(); return true })
	r.mu.Lock()
	r.recs = append(r.recs, l)
	r.mu.Unlock()
	return nil
}

// TestAwaitWALReports: a --wal=none backup waiting for another process
// to archive its WAL says so when it starts waiting and every 30 s, with
// the segments missing, the time waited and the timeout, not at every
// poll.
func TestAwaitWALReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := repository.New(mem.New())
		if err := repo.Bind(t.Context(), repotest.SystemID, repotest.SegSize); err != nil {
			t.Fatal(err)
		}
		names := []string{manifest.SegmentName(1, 3, repotest.SegSize), manifest.SegmentName(1, 4, repotest.SegSize)}
		go func() {
			time.Sleep(75 * time.Second)
			comp := chunker.NewCompressor()
			for i, n := range names {
				if _, err := repo.PutWAL(context.Background(), comp, n, repotest.SegmentData(uint64(3+i))); err != nil {
					t.Error(err)
				}
			}
		}()
		rec := &recorder{}
		began := time.Now()
		wal, err := awaitWAL(t.Context(), repo, names, 5*time.Minute, "", slog.New(rec))
		if err != nil || len(wal) != 2 {
			t.Fatalf("awaitWAL: %d segments, %v", len(wal), err)
		}
		var waits []logRec
		for _, r := range rec.recs {
			if strings.Contains(r.msg, "waiting") {
				waits = append(waits, r)
			}
		}
		if len(waits) != 3 {
			t.Fatalf("%d waiting messages in 75 s, want 3 (at 0, 30 and 60 s): %+v", len(waits), waits)
		}
		for i, w := range waits {
			want := map[string]string{"missing": "2", "first_missing": names[0], "last_missing": names[1],
				"waited": (time.Duration(i) * 30 * time.Second).String(), "timeout": "5m0s"}
			for k, v := range want {
				if w.attrs[k] != v {
					t.Errorf("message %d: %s=%q, want %q (%+v)", i, k, w.attrs[k], v, w.attrs)
				}
			}
			if got := w.at.Sub(began); got != time.Duration(i)*30*time.Second {
				t.Errorf("message %d at %s, want %s", i, got, time.Duration(i)*30*time.Second)
			}
		}
	})
}
