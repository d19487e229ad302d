package providers

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true}, {"16M", 16 << 20, true}, {"16MB", 16 << 20, true}, {"16MiB", 16 << 20, true},
		{"256k", 256 << 10, true}, {"1G", 1 << 30, true}, {"2TiB", 2 << 40, true},
		{"", 0, false}, {"0", 0, false}, {"MB", 0, false}, {"16XB", 0, false}, {"-1", 0, false},
		{"99999999999999999999", 0, false}, {"9999999999T", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestPartSize(t *testing.T) {
	const mib, tib = 1 << 20, 1 << 40
	tests := []struct {
		size, configured int64
		maxParts         int
		want             int64
	}{
		{100 * mib, 16 * mib, 10000, 16 * mib},
		{tib, 16 * mib, 10000, 105 * mib},
		{tib, 16 * mib, 1000, 1049 * mib},
		{5 * tib, 16 * mib, 10000, 525 * mib},
	}
	for _, tt := range tests {
		if got := PartSize(tt.size, tt.configured, tt.maxParts); got != tt.want {
			t.Errorf("PartSize(%d, %d, %d) = %d MiB, want %d MiB", tt.size, tt.configured, tt.maxParts, got/mib, tt.want/mib)
		}
	}
}
