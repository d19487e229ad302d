package restore

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRewriteTablespaceMap(t *testing.T) {
	dirs := map[uint32]string{16384: "/new/ts1", 16390: "/new/line\nbreak\\x"}
	for _, tc := range []struct {
		name     string
		in       string
		remapped map[uint32]bool
		want     string
		wantErr  string
	}{
		{
			name:     "one remapped, one kept",
			in:       "16384 /old/ts1\n16385 /old/ts2\n",
			remapped: map[uint32]bool{16384: true},
			want:     "16384 /new/ts1\n16385 /old/ts2\n",
		},
		{
			name:     "escapes read and written as PostgreSQL does",
			in:       "16390 /old/a\\\nb\n16385 /old/back\\\\slash\r\n",
			remapped: map[uint32]bool{16390: true},
			want:     "16390 /new/line\\\nbreak\\\\x\n16385 /old/back\\\\slash\n",
		},
		{
			name: "nothing remapped normalises only",
			in:   "16384 /a b\n\n",
			want: "16384 /a b\n",
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rewriteTablespaceMap([]byte(tc.in), dirs, tc.remapped)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// What we write reads back to the same entries.
			back, err := parseTablespaceMap(got)
			if err != nil {
				t.Fatalf("rewritten map does not parse: %v", err)
			}
			for _, e := range back {
				if tc.remapped[e.oid] && e.path != dirs[e.oid] {
					t.Errorf("oid %d reads back as %q, want %q", e.oid, e.path, dirs[e.oid])
				}
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

// FuzzTablespaceMap checks that whatever parses can be written back and
// reads back to the same entries.
func FuzzTablespaceMap(f *testing.F) {
	f.Add([]byte("16384 /old/ts1\n16385 /old/ts2\n"))
	f.Add([]byte("16390 /a\\\nb\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseTablespaceMap(data)
		if err != nil {
			return
		}
		out, err := rewriteTablespaceMap(data, nil, nil)
		if err != nil {
			t.Fatalf("parsed but not rewritten: %v", err)
		}
		back, err := parseTablespaceMap(out)
		if err != nil {
			t.Fatalf("rewritten map %q does not parse: %v", out, err)
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
