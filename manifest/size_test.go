package manifest

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string // "" when in is a size
	}{
		{in: "1048576", want: 1 << 20},
		{in: "16M", want: 16 << 20},
		{in: "16MB", want: 16 << 20},
		{in: "16MiB", want: 16 << 20},
		{in: "512kB", want: 512 << 10}, // as PostgreSQL shows it
		{in: "256k", want: 256 << 10},
		{in: "1G", want: 1 << 30},
		{in: "1GB", want: 1 << 30},
		{in: "2TiB", want: 2 << 40},
		{in: "7b", want: 7},
		{in: "20 MB", want: 20 << 20},
		{in: " 16MB\n", want: 16 << 20},
		{in: "4611686018427387904", want: 1 << 62},
		{in: "4T", want: 4 << 40},
		{in: "", wantErr: "want a positive size"},
		{in: "  ", wantErr: "want a positive size"},
		{in: "MB", wantErr: "want a positive size"},
		{in: "-1", wantErr: "want a positive size"},
		{in: "1.5G", wantErr: `unknown unit ".5G"`},
		{in: "16XB", wantErr: `unknown unit "XB"`},
		{in: "16 M B", wantErr: "unknown unit"},
		{in: "0", wantErr: "must be positive"},
		{in: "0MB", wantErr: "must be positive"},
		{in: "99999999999999999999", wantErr: "out of range"},
		{in: "9999999999T", wantErr: "out of range"},
		{in: "4611686018427387905", wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			switch {
			case tt.wantErr == "" && (err != nil || got != tt.want):
				t.Errorf("ParseSize(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("ParseSize(%q) = %d, %v, want an error containing %q", tt.in, got, err, tt.wantErr)
			}
		})
	}
}

// TestParseSizeHumanBytes checks that what HumanBytes prints for a whole
// number of units reads back as the same size.
func TestParseSizeHumanBytes(t *testing.T) {
	for _, n := range []int64{1, 1023, 1 << 10, 16 << 20, 3 << 30, 2 << 40} {
		h := strings.Replace(strings.Replace(HumanBytes(n), ".0 ", "", 1), " ", "", 1)
		got, err := ParseSize(h)
		if err != nil || got != n {
			t.Errorf("ParseSize(%q) (HumanBytes(%d)) = %d, %v", h, n, got, err)
		}
	}
}
