package restore

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckTablespaceMap(t *testing.T) {
	dirs := map[uint32]string{16384: "/new/ts1", 16385: "/old/ts2", 16390: "/new/x"}
	for _, tc := range []struct {
		name    string
		in      string
		want    []tablespaceMapEntry // as parsed
		wantErr string
	}{
		{
			name: "two tablespaces",
			in:   "16384 /old/ts1\n16385 /old/ts2\n",
			want: []tablespaceMapEntry{{16384, "/old/ts1"}, {16385, "/old/ts2"}},
		},
		{
			name: "escapes read as PostgreSQL does",
			in:   "16390 /old/a\\\nb\n16385 /old/back\\\\slash\r\n",
			want: []tablespaceMapEntry{{16390, "/old/a\nb"}, {16385, "/old/back\\slash"}},
		},
		{
			name: "blank lines and a path with a blank",
			in:   "16384 /a b\n\n",
			want: []tablespaceMapEntry{{16384, "/a b"}},
		},
		{
			name: "empty",
			in:   "",
		},
		{
			name:    "a tablespace the backup does not have",
			in:      "16384 /old/ts1\n99999 /old/other\n",
			wantErr: "tablespace_map names tablespace 99999 (at /old/other), which the backup does not have",
		},
		{
			name:    "unterminated last line",
			in:      "16384 /a",
			wantErr: "not terminated",
		},
		{
			name:    "no path",
			in:      "16384\n",
			wantErr: "invalid line",
		},
		{
			name:    "not an oid",
			in:      "x /a\n",
			wantErr: "invalid line",
		},
		{
			name:    "oid 0",
			in:      "0 /a\n",
			wantErr: "invalid line",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkTablespaceMap([]byte(tc.in), dirs)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseTablespaceMap([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(tablespaceMapEntry{})); diff != "" {
				t.Errorf("parsed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMemberPath(t *testing.T) {
	for _, tc := range []struct {
		name    string
		dir     bool
		want    string
		wantErr string
	}{
		{name: "base/1/1259", want: "base/1/1259"},
		{name: "./base/1/1259", want: "base/1/1259"},
		{name: "pg_wal/", dir: true, want: "pg_wal"},
		{name: "../evil", wantErr: "climbs out"},
		{name: "base/../../evil", wantErr: "climbs out"},
		{name: "base/..", wantErr: "climbs out"},
		{name: "/etc/passwd", wantErr: "absolute"},
		{name: "base//x", wantErr: "canonical"},
		{name: "base/./x", wantErr: "canonical"},
		{name: "pg_wal/", wantErr: "canonical"}, // a file name cannot end in a slash
		{name: "a\\b", wantErr: "backslash"},
		{name: "", wantErr: "empty"},
	} {
		got, err := memberPath(tc.name, tc.dir)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("memberPath(%q) = %q, %v; want an error containing %q", tc.name, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("memberPath(%q) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		dir, parent string
		want        bool
	}{
		{"/a", "/a", true},
		{"/a/b", "/a", true},
		{"/ab", "/a", false},
		{"/a/..b", "/a", true},
		{"/b", "/a", false},
	} {
		if got := within(tc.dir, tc.parent); got != tc.want {
			t.Errorf("within(%q, %q) = %v, want %v", tc.dir, tc.parent, got, tc.want)
		}
	}
}

// FuzzTablespaceMap checks that whatever parses has an oid and a path on
// each line and parses the same with its escapes written back.
func FuzzTablespaceMap(f *testing.F) {
	f.Add([]byte("16384 /old/ts1\n16385 /old/ts2\n"))
	f.Add([]byte("16390 /a\\\nb\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseTablespaceMap(data)
		if err != nil {
			return
		}
		var out strings.Builder
		for _, e := range entries {
			if e.oid == 0 || e.path == "" {
				t.Fatalf("entry %+v: no oid or no path", e)
			}
			fmt.Fprintf(&out, "%d ", e.oid)
			for _, c := range []byte(e.path) {
				if c == '\n' || c == '\r' || c == '\\' {
					out.WriteByte('\\')
				}
				out.WriteByte(c)
			}
			out.WriteByte('\n')
		}
		back, err := parseTablespaceMap([]byte(out.String()))
		if err != nil {
			t.Fatalf("%q does not parse: %v", out.String(), err)
		}
		if diff := cmp.Diff(entries, back, cmp.AllowUnexported(tablespaceMapEntry{})); diff != "" {
			t.Errorf("round trip (-first +second):\n%s", diff)
		}
	})
}

// FuzzMemberPath checks that an accepted name never leaves its directory.
func FuzzMemberPath(f *testing.F) {
	for _, s := range []string{"base/1/1259", "./x", "../x", "/x", "a/../../b", "pg_wal/"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, name string, dir bool) {
		p, err := memberPath(name, dir)
		if err != nil {
			return
		}
		if strings.HasPrefix(p, "/") || p == "" {
			t.Fatalf("memberPath(%q) = %q", name, p)
		}
		for _, e := range strings.Split(p, "/") {
			if e == "" || e == "." || e == ".." {
				t.Fatalf("memberPath(%q) = %q has element %q", name, p, e)
			}
		}
	})
}
