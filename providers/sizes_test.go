package providers

import "testing"

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
