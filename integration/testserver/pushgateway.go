package testserver

import (
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Pushgateway is an in-process stand-in for the Prometheus Pushgateway's
// push API that records what was pushed, so tests can check both the
// requests a client made and the state a real Pushgateway would be in
// after them.
//
// It implements, as Pushgateway 1.x does:
//
//   - PUT, POST and DELETE on /metrics/job/<job>{/<label>/<value>}, where
//     the job and the label pairs form the grouping key; a name suffixed
//     with @base64 (job@base64 too) carries its value in URL-safe base64,
//     padding optional, "=" for the empty value; this is how the Go client
//     sends values holding a '/';
//   - the body in the protobuf delimited format or the text format, chosen
//     by Content-Type, optionally gzip-compressed (Content-Encoding);
//   - PUT replaces the whole group, POST replaces only the metric families
//     it carries, DELETE removes the group;
//   - the grouping labels are set on every pushed metric, overriding what
//     the metric carried;
//   - 400 for a malformed grouping key or body, for metrics with
//     timestamps, for a series pushed twice, and for a family whose type
//     differs from the same family in another group; 405 for other
//     methods; 404 for other paths.
//
// It does not add the push_time_seconds and push_failure_time_seconds
// series the real one adds, and it keeps nothing on disk.
type Pushgateway struct {
	// URL is the base URL to give a client, http://127.0.0.1:P.
	URL string

	mu       sync.Mutex
	groups   map[string]*PushGroup // by groupID of the grouping key
	requests []PushRequest
}

// PushRequest is one request the Pushgateway received.
type PushRequest struct {
	Method string
	// Grouping is the decoded grouping key, job included; nil when the
	// path did not parse.
	Grouping map[string]string
	// ContentType is the request's Content-Type header.
	ContentType string
	// Status is the HTTP status of the answer; Err says why a request was
	// refused.
	Status int
	Err    string
}

// PushGroup is the current content of one group.
type PushGroup struct {
	// Labels is the grouping key, job included.
	Labels map[string]string
	// Families holds the group's metric families by name. They are shared
	// with the server and must not be modified.
	Families map[string]*dto.MetricFamily
}

// Value is the value of the one series of the family name in the group:
// a gauge's, a counter's or an untyped value. ok is false when the family
// is missing, holds other than one series, or is of another type.
func (g PushGroup) Value(name string) (v float64, ok bool) {
	f := g.Families[name]
	if f == nil || len(f.GetMetric()) != 1 {
		return 0, false
	}
	m := f.GetMetric()[0]
	switch f.GetType() {
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue(), m.GetGauge() != nil
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue(), m.GetCounter() != nil
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue(), m.GetUntyped() != nil
	}
	return 0, false
}

// StartPushgateway starts a Pushgateway stand-in on 127.0.0.1, stopped when
// the test ends.
func StartPushgateway(t testing.TB) *Pushgateway {
	t.Helper()
	pg := &Pushgateway{groups: map[string]*PushGroup{}}
	pg.URL = startLoopback(t, pg).URL
	return pg
}

// startLoopback serves h on 127.0.0.1 (never another interface) until the
// test ends.
func startLoopback(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// Requests returns the requests received so far, oldest first.
func (pg *Pushgateway) Requests() []PushRequest {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	return slices.Clone(pg.requests)
}

// Group returns the group with exactly this grouping key (job included).
func (pg *Pushgateway) Group(labels map[string]string) (PushGroup, bool) {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	g, ok := pg.groups[groupID(labels)]
	if !ok {
		return PushGroup{}, false
	}
	return PushGroup{Labels: maps.Clone(g.Labels), Families: maps.Clone(g.Families)}, true
}

// Groups returns the grouping keys of all groups.
func (pg *Pushgateway) Groups() []map[string]string {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	var out []map[string]string
	for _, id := range slices.Sorted(maps.Keys(pg.groups)) {
		out = append(out, maps.Clone(pg.groups[id].Labels))
	}
	return out
}

// groupID is a canonical string for a grouping key: label names cannot
// hold '\xff', so joining sorted pairs with it cannot collide.
func groupID(labels map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b.WriteString(k)
		b.WriteByte(0xfe)
		b.WriteString(labels[k])
		b.WriteByte(0xff)
	}
	return b.String()
}

// pushError is a refusal with its status.
type pushError struct {
	status int
	msg    string
}

func (e *pushError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &pushError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func (pg *Pushgateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := PushRequest{Method: r.Method, ContentType: r.Header.Get("Content-Type"), Status: http.StatusOK}
	err := pg.serve(r, &rec)
	var pe *pushError
	switch {
	case err == nil:
	case errors.As(err, &pe):
		rec.Status, rec.Err = pe.status, pe.msg
	default:
		rec.Status, rec.Err = http.StatusBadRequest, err.Error()
	}
	pg.mu.Lock()
	pg.requests = append(pg.requests, rec)
	pg.mu.Unlock()
	if rec.Status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", "PUT, POST, DELETE")
	}
	w.WriteHeader(rec.Status)
	if rec.Err != "" {
		io.WriteString(w, rec.Err+"\n")
	}
}

// serve handles one request, filling in rec.
func (pg *Pushgateway) serve(r *http.Request, rec *PushRequest) error {
	grouping, err := parseGroupingKey(r.URL.Path)
	if err != nil {
		return err
	}
	rec.Grouping = grouping
	switch r.Method {
	case http.MethodDelete:
		pg.mu.Lock()
		delete(pg.groups, groupID(grouping))
		pg.mu.Unlock()
		rec.Status = http.StatusAccepted
		return nil
	case http.MethodPut, http.MethodPost:
	default:
		return &pushError{http.StatusMethodNotAllowed, "method " + r.Method + " not allowed"}
	}
	fams, err := decodePush(r, grouping)
	if err != nil {
		return err
	}
	pg.mu.Lock()
	defer pg.mu.Unlock()
	id := groupID(grouping)
	next := map[string]*dto.MetricFamily{}
	if old, ok := pg.groups[id]; ok && r.Method == http.MethodPost {
		maps.Copy(next, old.Families)
	}
	maps.Copy(next, fams)
	// As the real one, refuse what would make its /metrics inconsistent:
	// one family name with two types across groups.
	for name, f := range fams {
		for otherID, g := range pg.groups {
			if o, ok := g.Families[name]; ok && otherID != id && o.GetType() != f.GetType() {
				return badRequest("pushed metrics are invalid or inconsistent with existing metrics: %s is %s here and %s in group %v",
					name, f.GetType(), o.GetType(), g.Labels)
			}
		}
	}
	pg.groups[id] = &PushGroup{Labels: grouping, Families: next}
	return nil
}

// parseGroupingKey decodes /metrics/job/<job>{/<label>/<value>}.
func parseGroupingKey(path string) (map[string]string, error) {
	rest, ok := strings.CutPrefix(path, "/metrics/")
	if !ok {
		return nil, &pushError{http.StatusNotFound, "not found: " + path}
	}
	parts := strings.Split(rest, "/")
	// A trailing slash leaves an empty last element; the real one's router
	// takes /metrics/job/x/ as /metrics/job/x.
	if len(parts) > 2 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	if len(parts) < 2 || (parts[0] != "job" && parts[0] != "job@base64") {
		return nil, &pushError{http.StatusNotFound, "not found: " + path}
	}
	if len(parts)%2 != 0 {
		return nil, badRequest("odd number of components in label string %q", strings.Join(parts[2:], "/"))
	}
	grouping := map[string]string{}
	for i := 0; i < len(parts); i += 2 {
		name, value := parts[i], parts[i+1]
		if n, ok := strings.CutSuffix(name, "@base64"); ok {
			v, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(value, "="))
			if err != nil {
				return nil, badRequest("invalid base64 encoding in label %s: %v", n, err)
			}
			name, value = n, string(v)
		}
		if !model.LegacyValidation.IsValidLabelName(name) || strings.HasPrefix(name, model.ReservedLabelPrefix) {
			return nil, badRequest("improper label name %q", name)
		}
		if i > 0 && name == "job" {
			return nil, badRequest("the job label appears twice in the grouping key")
		}
		grouping[name] = value
	}
	if grouping["job"] == "" {
		return nil, badRequest("job name is required")
	}
	return grouping, nil
}

// decodePush reads the pushed metric families, by Content-Type, and sets
// the grouping labels on every series.
func decodePush(r *http.Request, grouping map[string]string) (map[string]*dto.MetricFamily, error) {
	// Only gzip is understood; the real one reads any other encoding as
	// is, so it fails to parse.
	body := io.Reader(r.Body)
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, badRequest("gzip body: %v", err)
		}
		defer zr.Close()
		body = zr
	}
	// An unknown type is taken as the text format, as the real one does;
	// a protobuf type with other parameters then fails to parse.
	dec := expfmt.NewDecoder(body, expfmt.ResponseFormat(r.Header))
	fams := map[string]*dto.MetricFamily{}
	for {
		f := &dto.MetricFamily{}
		err := dec.Decode(f)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, badRequest("parse pushed metrics: %v", err)
		}
		if _, dup := fams[f.GetName()]; dup {
			return nil, badRequest("metric family %s pushed twice", f.GetName())
		}
		seen := map[string]bool{}
		for _, m := range f.GetMetric() {
			if m.TimestampMs != nil {
				return nil, badRequest("pushed metrics must not have timestamps: %s", f.GetName())
			}
			setGrouping(m, grouping)
			id := seriesID(m)
			if seen[id] {
				return nil, badRequest("metric %s with the same labels pushed twice", f.GetName())
			}
			seen[id] = true
		}
		fams[f.GetName()] = f
	}
	return fams, nil
}

// setGrouping puts the grouping labels on m, replacing labels of the same
// name, and sorts its labels.
func setGrouping(m *dto.Metric, grouping map[string]string) {
	labels := m.Label[:0]
	for _, l := range m.Label {
		if _, ok := grouping[l.GetName()]; !ok {
			labels = append(labels, l)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(grouping)) {
		labels = append(labels, &dto.LabelPair{Name: new(k), Value: new(grouping[k])})
	}
	slices.SortFunc(labels, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	m.Label = labels
}

func seriesID(m *dto.Metric) string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return groupID(l)
}
