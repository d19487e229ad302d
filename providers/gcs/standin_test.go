package gcs

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/manifest"
)

// standIn is a stand-in for the JSON API of a GCS bucket with Object
// Retention Lock enabled, as far as the store uses it (objects insert,
// multipart and resumable; get, list, patch and delete; buckets get),
// following https://cloud.google.com/storage/docs/json_api. It exists
// because fake-gcs-server v1.56.1 stores and reports an object's
// retention but does not enforce it: it deletes retained objects,
// refuses every change to a Locked retention (GCS lets it be extended)
// and has no objectRetention on buckets. It keeps its own clock, which
// wait moves on.
//
// What it enforces, as GCS does: deleting or replacing an object before
// its retainUntilTime is refused with 403; a Locked retention can only
// be extended; shortening an Unlocked one needs
// overrideUnlockedRetention=true.
type standIn struct {
	srv *httptest.Server

	mu       sync.Mutex
	offset   time.Duration
	gen      int64
	objects  map[string]*standInObject
	sessions map[string]*standInSession
	// dropRetention makes it store objects without the retention they
	// were uploaded with, as an emulator that ignores it would.
	dropRetention bool
}

type standInObject struct {
	name       string
	data       []byte
	generation int64
	created    time.Time
	retention  *objectRetention
}

type standInSession struct {
	meta objectMetadata
	size int64
	data []byte
}

const standInBucket = "locked"

func newStandIn(t *testing.T) *standIn {
	f := &standIn{objects: map[string]*standInObject{}, sessions: map[string]*standInSession{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *standIn) now() time.Time { return time.Now().Add(f.offset) }

func (f *standIn) wait(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offset += d
}

func (f *standIn) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.objects)
}

func (f *standIn) fail(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

func (f *standIn) reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *standIn) resource(o *standInObject) map[string]any {
	m := map[string]any{
		"name":        o.name,
		"bucket":      standInBucket,
		"size":        strconv.Itoa(len(o.data)),
		"generation":  strconv.FormatInt(o.generation, 10),
		"crc32c":      encodeCRC32C(crc32.Checksum(o.data, manifest.Castagnoli)),
		"timeCreated": o.created.UTC().Format(time.RFC3339Nano),
		"updated":     o.created.UTC().Format(time.RFC3339Nano),
	}
	if o.retention != nil {
		m["retention"] = map[string]any{"mode": o.retention.Mode, "retainUntilTime": o.retention.RetainUntilTime.UTC().Format(time.RFC3339Nano)}
	}
	return m
}

func (f *standIn) retained(o *standInObject) bool {
	return o.retention != nil && f.now().Before(o.retention.RetainUntilTime)
}

func (f *standIn) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	path := r.URL.EscapedPath()
	if id, ok := strings.CutPrefix(path, "/session/"); ok {
		f.chunk(w, r, id)
		return
	}
	if rest, ok := strings.CutPrefix(path, "/upload/storage/v1/b/"+standInBucket+"/o"); ok && rest == "" {
		f.insert(w, r)
		return
	}
	rest, ok := strings.CutPrefix(path, "/storage/v1/b/"+standInBucket)
	if !ok {
		f.fail(w, http.StatusNotFound, "The specified bucket does not exist.")
		return
	}
	switch {
	case rest == "":
		f.reply(w, map[string]any{"name": standInBucket, "objectRetention": map[string]any{"mode": "Enabled"}})
	case rest == "/o":
		f.list(w, r)
	case strings.HasPrefix(rest, "/o/"):
		name, err := url.PathUnescape(strings.TrimPrefix(rest, "/o/"))
		if err != nil {
			f.fail(w, http.StatusBadRequest, "bad name")
			return
		}
		f.object(w, r, name)
	default:
		f.fail(w, http.StatusNotFound, "Not Found")
	}
}

func (f *standIn) list(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	var names []string
	for name := range f.objects {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	items := []map[string]any{}
	for _, name := range names {
		items = append(items, f.resource(f.objects[name]))
	}
	f.reply(w, map[string]any{"items": items})
}

func (f *standIn) object(w http.ResponseWriter, r *http.Request, name string) {
	q := r.URL.Query()
	o := f.objects[name]
	if o == nil || q.Get("generation") != "" && q.Get("generation") != strconv.FormatInt(o.generation, 10) {
		f.fail(w, http.StatusNotFound, "No such object: "+standInBucket+"/"+name)
		return
	}
	switch r.Method {
	case http.MethodGet:
		if q.Get("alt") != "media" {
			f.reply(w, f.resource(o))
			return
		}
		data := o.data
		w.Header().Set("X-Goog-Hash", "crc32c="+encodeCRC32C(crc32.Checksum(o.data, manifest.Castagnoli)))
		if rng := r.Header.Get("Range"); rng != "" {
			from, to, _ := strings.Cut(strings.TrimPrefix(rng, "bytes="), "-")
			start, _ := strconv.Atoi(from)
			end := len(data) - 1
			if to != "" {
				end, _ = strconv.Atoi(to)
				end = min(end, len(data)-1)
			}
			if start >= len(data) {
				f.fail(w, http.StatusRequestedRangeNotSatisfiable, "range")
				return
			}
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(data)))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(data[start : end+1])
			return
		}
		_, _ = w.Write(data)
	case http.MethodDelete:
		if f.retained(o) {
			f.fail(w, http.StatusForbidden, "Object '"+standInBucket+"/"+name+"' is under active Object Retention Lock and cannot be deleted, overwritten or archived until "+o.retention.RetainUntilTime.UTC().Format(time.RFC3339))
			return
		}
		delete(f.objects, name)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		var body struct {
			Retention *objectRetention `json:"retention"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Retention == nil {
			f.fail(w, http.StatusBadRequest, "bad patch")
			return
		}
		cur, next := o.retention, body.Retention
		if cur != nil && f.retained(o) {
			switch {
			case cur.Mode == "Locked" && (next.Mode != "Locked" || next.RetainUntilTime.Before(cur.RetainUntilTime)):
				f.fail(w, http.StatusForbidden, "Locked retention can only be extended")
				return
			case next.RetainUntilTime.Before(cur.RetainUntilTime) && q.Get("overrideUnlockedRetention") != "true":
				f.fail(w, http.StatusForbidden, "shortening an unlocked retention needs overrideUnlockedRetention")
				return
			}
		}
		o.retention = next
		f.reply(w, f.resource(o))
	default:
		f.fail(w, http.StatusMethodNotAllowed, "method")
	}
}

// insert starts a resumable upload or takes a multipart one.
func (f *standIn) insert(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch q.Get("uploadType") {
	case "resumable":
		var meta objectMetadata
		if err := json.NewDecoder(r.Body).Decode(&meta); err != nil {
			f.fail(w, http.StatusBadRequest, "bad metadata")
			return
		}
		size, _ := strconv.ParseInt(r.Header.Get("X-Upload-Content-Length"), 10, 64)
		id := strconv.Itoa(len(f.sessions) + 1)
		f.sessions[id] = &standInSession{meta: meta, size: size}
		w.Header().Set("Location", f.srv.URL+"/session/"+id+"?ifGenerationMatch="+q.Get("ifGenerationMatch"))
		w.WriteHeader(http.StatusOK)
	case "multipart":
		_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil {
			f.fail(w, http.StatusBadRequest, "content type")
			return
		}
		mr := multipart.NewReader(r.Body, params["boundary"])
		part, err := mr.NextPart()
		var meta objectMetadata
		if err == nil {
			err = json.NewDecoder(part).Decode(&meta)
		}
		var data []byte
		if err == nil {
			if part, err = mr.NextPart(); err == nil {
				data, err = io.ReadAll(part)
			}
		}
		if err != nil {
			f.fail(w, http.StatusBadRequest, "multipart body: "+err.Error())
			return
		}
		f.create(w, meta, data, q.Get("ifGenerationMatch"))
	default:
		f.fail(w, http.StatusBadRequest, "uploadType")
	}
}

// chunk takes a chunk of a resumable upload.
func (f *standIn) chunk(w http.ResponseWriter, r *http.Request, id string) {
	sess := f.sessions[id]
	if sess == nil {
		f.fail(w, http.StatusNotFound, "no such upload")
		return
	}
	if r.Method == http.MethodDelete {
		delete(f.sessions, id)
		w.WriteHeader(499)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.fail(w, http.StatusBadRequest, "body")
		return
	}
	sess.data = append(sess.data, body...)
	if int64(len(sess.data)) < sess.size {
		w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", len(sess.data)-1))
		w.WriteHeader(http.StatusPermanentRedirect)
		return
	}
	delete(f.sessions, id)
	f.create(w, sess.meta, sess.data, r.URL.Query().Get("ifGenerationMatch"))
}

func (f *standIn) create(w http.ResponseWriter, meta objectMetadata, data []byte, ifGenerationMatch string) {
	old := f.objects[meta.Name]
	if ifGenerationMatch == "0" && old != nil {
		f.fail(w, http.StatusPreconditionFailed, "At least one of the pre-conditions you specified did not hold.")
		return
	}
	if old != nil && f.retained(old) {
		f.fail(w, http.StatusForbidden, "object is under retention")
		return
	}
	if meta.CRC32C != "" && meta.CRC32C != encodeCRC32C(crc32.Checksum(data, manifest.Castagnoli)) {
		f.fail(w, http.StatusBadRequest, "Provided CRC32C doesn't match calculated CRC32C")
		return
	}
	f.gen++
	o := &standInObject{name: meta.Name, data: data, generation: f.gen, created: f.now(), retention: meta.Retention}
	if f.dropRetention {
		o.retention = nil
	}
	f.objects[meta.Name] = o
	f.reply(w, f.resource(o))
}
