package azblob

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// standIn is a stand-in for the Blob service of a storage account with
// blob versioning and version-level immutability support, speaking the
// documented REST API (https://learn.microsoft.com/rest/api/storageservices/)
// as far as the store uses it. Azurite 3.35 implements neither versioning
// nor immutability: it ignores the policy headers of Put Blob and answers
// 501 to Set Blob Immutability Policy. It keeps its own clock, which Wait
// moves on, so that the tests need not sleep until a policy expires.
//
// What it enforces, as Azure does: a version under an unexpired policy
// cannot be deleted (409 BlobImmutableDueToPolicy); a Locked policy can
// only be extended; a plain Delete Blob of a versioned blob keeps it as a
// previous version.
type standIn struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	offset time.Duration // added to the real time
	serial int           // makes version IDs unique
	blobs  map[string][]*standInVersion
	staged map[string][]byte // "name\x00blockid" → bytes
}

type standInVersion struct {
	id       string
	current  bool
	data     []byte
	modified time.Time
	until    time.Time // zero: no policy
	mode     string    // Unlocked or Locked
}

const standInContainer = "locked"

func newStandIn(t *testing.T) *standIn {
	f := &standIn{t: t, blobs: map[string][]*standInVersion{}, staged: map[string][]byte{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// connectionString addresses the stand-in with the development account.
func (f *standIn) connectionString() string {
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" +
		"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==" +
		";BlobEndpoint=" + f.srv.URL + "/devstoreaccount1;"
}

func (f *standIn) now() time.Time { return time.Now().Add(f.offset) }

// wait moves the clock on by d.
func (f *standIn) wait(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offset += d
}

// versionCount is how many versions of name the account keeps.
func (f *standIn) versionCount(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.blobs[name])
}

func (f *standIn) fail(w http.ResponseWriter, status int, code string) {
	w.Header().Set("x-ms-error-code", code)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, code)
}

func (f *standIn) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rest, ok := strings.CutPrefix(r.URL.Path, "/devstoreaccount1/")
	if !ok {
		f.fail(w, http.StatusBadRequest, "InvalidUri")
		return
	}
	cont, name, _ := strings.Cut(rest, "/")
	if cont != standInContainer {
		f.fail(w, http.StatusNotFound, "ContainerNotFound")
		return
	}
	q := r.URL.Query()
	switch {
	case name == "" && q.Get("comp") == "list":
		f.list(w, q)
	case name == "" && q.Get("restype") == "container":
		w.Header().Set("x-ms-immutable-storage-with-versioning-enabled", "true")
		w.Header().Set("x-ms-has-immutability-policy", "false")
		w.Header().Set("x-ms-has-legal-hold", "false")
		w.Header().Set("Last-Modified", f.now().UTC().Format(http.TimeFormat))
		w.Header().Set("ETag", `"0x1"`)
		w.WriteHeader(http.StatusOK)
	case r.Method == http.MethodPut && q.Get("comp") == "block":
		body, _ := io.ReadAll(r.Body)
		f.staged[name+"\x00"+q.Get("blockid")] = body
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodPut && q.Get("comp") == "blocklist":
		var list struct {
			Latest []string `xml:"Latest"`
		}
		body, _ := io.ReadAll(r.Body)
		if err := xml.Unmarshal(body, &list); err != nil {
			f.fail(w, http.StatusBadRequest, "InvalidXmlDocument")
			return
		}
		var data []byte
		for _, id := range list.Latest {
			b, ok := f.staged[name+"\x00"+id]
			if !ok {
				f.fail(w, http.StatusBadRequest, "InvalidBlockList")
				return
			}
			data = append(data, b...)
		}
		f.create(w, r, name, data)
	case r.Method == http.MethodPut && q.Get("comp") == "immutabilityPolicies":
		f.setPolicy(w, r, name, q.Get("versionid"))
	case r.Method == http.MethodPut && q.Get("comp") == "":
		body, _ := io.ReadAll(r.Body)
		f.create(w, r, name, body)
	case r.Method == http.MethodHead || r.Method == http.MethodGet:
		f.get(w, r, name, q.Get("versionid"))
	case r.Method == http.MethodDelete:
		f.delete(w, name, q.Get("versionid"))
	default:
		f.fail(w, http.StatusBadRequest, "UnsupportedHttpVerb")
	}
}

func (f *standIn) current(name string) *standInVersion {
	for _, v := range f.blobs[name] {
		if v.current {
			return v
		}
	}
	return nil
}

func (f *standIn) find(name, id string) *standInVersion {
	if id == "" {
		return f.current(name)
	}
	for _, v := range f.blobs[name] {
		if v.id == id {
			return v
		}
	}
	return nil
}

func (f *standIn) create(w http.ResponseWriter, r *http.Request, name string, data []byte) {
	if r.Header.Get("If-None-Match") == "*" && f.current(name) != nil {
		f.fail(w, http.StatusConflict, "BlobAlreadyExists")
		return
	}
	now := f.now()
	f.serial++
	v := &standInVersion{
		id:       now.UTC().Format("2006-01-02T15:04:05.") + fmt.Sprintf("%07dZ", f.serial),
		current:  true,
		data:     data,
		modified: now,
	}
	if h := r.Header.Get("x-ms-immutability-policy-until-date"); h != "" {
		until, err := http.ParseTime(h)
		if err != nil {
			f.fail(w, http.StatusBadRequest, "InvalidHeaderValue")
			return
		}
		v.until, v.mode = until, r.Header.Get("x-ms-immutability-policy-mode")
		if v.mode == "" {
			v.mode = "Unlocked"
		}
	}
	for _, old := range f.blobs[name] {
		old.current = false
	}
	f.blobs[name] = append(f.blobs[name], v)
	w.Header().Set("x-ms-version-id", v.id)
	w.Header().Set("ETag", `"`+v.id+`"`)
	w.Header().Set("Last-Modified", now.UTC().Format(http.TimeFormat))
	w.WriteHeader(http.StatusCreated)
}

func (f *standIn) get(w http.ResponseWriter, r *http.Request, name, id string) {
	v := f.find(name, id)
	if v == nil {
		f.fail(w, http.StatusNotFound, "BlobNotFound")
		return
	}
	h := w.Header()
	h.Set("x-ms-version-id", v.id)
	h.Set("x-ms-is-current-version", strconv.FormatBool(v.current))
	h.Set("x-ms-blob-type", "BlockBlob")
	h.Set("ETag", `"`+v.id+`"`)
	h.Set("Last-Modified", v.modified.UTC().Format(http.TimeFormat))
	if !v.until.IsZero() {
		h.Set("x-ms-immutability-policy-until-date", v.until.UTC().Format(http.TimeFormat))
		h.Set("x-ms-immutability-policy-mode", v.mode)
	}
	h.Set("x-ms-legal-hold", "false")
	data := v.data
	status := http.StatusOK
	if rng := r.Header.Get("Range"); rng != "" && r.Method == http.MethodGet {
		spec := strings.TrimPrefix(rng, "bytes=")
		from, to, _ := strings.Cut(spec, "-")
		start, _ := strconv.Atoi(from)
		end := len(data) - 1
		if to != "" {
			end, _ = strconv.Atoi(to)
			end = min(end, len(data)-1)
		}
		if start >= len(data) {
			f.fail(w, http.StatusRequestedRangeNotSatisfiable, "InvalidRange")
			return
		}
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(data)))
		data = data[start : end+1]
		status = http.StatusPartialContent
	}
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		_, _ = w.Write(data)
	}
}

func (f *standIn) delete(w http.ResponseWriter, name, id string) {
	v := f.find(name, id)
	if v == nil {
		f.fail(w, http.StatusNotFound, "BlobNotFound")
		return
	}
	if id == "" {
		// Versioning keeps the blob as a previous version.
		v.current = false
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if !v.until.IsZero() && f.now().Before(v.until) {
		f.fail(w, http.StatusConflict, "BlobImmutableDueToPolicy")
		return
	}
	f.blobs[name] = slices.DeleteFunc(f.blobs[name], func(x *standInVersion) bool { return x == v })
	if len(f.blobs[name]) == 0 {
		delete(f.blobs, name)
	}
	w.WriteHeader(http.StatusAccepted)
}

func (f *standIn) setPolicy(w http.ResponseWriter, r *http.Request, name, id string) {
	v := f.find(name, id)
	if v == nil {
		f.fail(w, http.StatusNotFound, "BlobNotFound")
		return
	}
	until, err := http.ParseTime(r.Header.Get("x-ms-immutability-policy-until-date"))
	if err != nil {
		f.fail(w, http.StatusBadRequest, "InvalidHeaderValue")
		return
	}
	mode := r.Header.Get("x-ms-immutability-policy-mode")
	if mode == "" {
		mode = "Unlocked"
	}
	locked := v.mode == "Locked" && f.now().Before(v.until)
	if locked && (mode != "Locked" || until.Before(v.until)) {
		f.fail(w, http.StatusConflict, "ImmutabilityPolicyDeleteOnLockedPolicy")
		return
	}
	v.until, v.mode = until, mode
	w.Header().Set("x-ms-immutability-policy-until-date", until.UTC().Format(http.TimeFormat))
	w.Header().Set("x-ms-immutability-policy-mode", mode)
	w.WriteHeader(http.StatusOK)
}

// list answers List Blobs: all names (with versions when asked) from
// the prefix on, in order, without paging (the tests' listings are
// small).
func (f *standIn) list(w http.ResponseWriter, q map[string][]string) {
	prefix := ""
	if p := q["prefix"]; len(p) > 0 {
		prefix = p[0]
	}
	include := ""
	if p := q["include"]; len(p) > 0 {
		include = p[0]
	}
	versions := strings.Contains(include, "versions")
	var names []string
	for name := range f.blobs {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="` + f.srv.URL + `/devstoreaccount1/" ContainerName="` + standInContainer + `"><Blobs>`)
	for _, name := range names {
		for _, v := range f.blobs[name] {
			if !versions && !v.current {
				continue
			}
			b.WriteString("<Blob><Name>")
			_ = xml.EscapeText(&b, []byte(name))
			b.WriteString("</Name>")
			if versions {
				fmt.Fprintf(&b, "<VersionId>%s</VersionId><IsCurrentVersion>%t</IsCurrentVersion>", v.id, v.current)
			}
			fmt.Fprintf(&b, "<Properties><Last-Modified>%s</Last-Modified><Etag>\"%s\"</Etag><Content-Length>%d</Content-Length><BlobType>BlockBlob</BlobType>",
				v.modified.UTC().Format(http.TimeFormat), v.id, len(v.data))
			if !v.until.IsZero() && strings.Contains(include, "immutabilitypolicy") {
				fmt.Fprintf(&b, "<ImmutabilityPolicyUntilDate>%s</ImmutabilityPolicyUntilDate><ImmutabilityPolicyMode>%s</ImmutabilityPolicyMode>",
					v.until.UTC().Format(http.TimeFormat), v.mode)
			}
			if strings.Contains(include, "legalhold") {
				b.WriteString("<LegalHold>false</LegalHold>")
			}
			b.WriteString("</Properties></Blob>")
		}
	}
	b.WriteString("</Blobs><NextMarker/></EnumerationResults>")
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}
