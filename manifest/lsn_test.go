package manifest

import (
	"encoding/json"
	"testing"
)

func TestParseLSN(t *testing.T) {
	tests := []struct {
		in      string
		want    LSN
		wantErr bool
	}{
		{in: "0/0", want: 0},
		{in: "0/3000028", want: 0x3000028},
		{in: "0/0300A028", want: 0x300A028},
		{in: "0/0300a028", want: 0x300A028},
		{in: "1/0", want: 1 << 32},
		{in: "16/B374D848", want: 0x16B374D848},
		{in: "FFFFFFFF/FFFFFFFF", want: ^LSN(0)},
		{in: "ffffffff/ffffffff", want: ^LSN(0)},
		{in: "", wantErr: true},
		{in: "0", wantErr: true},
		{in: "/0", wantErr: true},
		{in: "0/", wantErr: true},
		{in: "0/0/0", wantErr: true},
		{in: "100000000/0", wantErr: true},
		{in: "0/123456789", wantErr: true},
		{in: "0x1/0", wantErr: true},
		{in: "+1/0", wantErr: true},
		{in: "-1/0", wantErr: true},
		{in: " 0/0", wantErr: true},
		{in: "0/0 ", wantErr: true},
		{in: "0/G", wantErr: true},
		{in: "0/1_0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseLSN(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseLSN(%q) = %v, want an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLSN(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseLSN(%q) = %#x, want %#x", tt.in, uint64(got), uint64(tt.want))
			}
		})
	}
}

func TestLSNString(t *testing.T) {
	tests := []struct {
		lsn  LSN
		want string
	}{
		{0, "0/00000000"},
		{0x3000028, "0/03000028"},
		{0x300A028, "0/0300A028"},
		{1 << 32, "1/00000000"},
		{0x16B374D848, "16/B374D848"},
		{^LSN(0), "FFFFFFFF/FFFFFFFF"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.lsn.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLSNJSON(t *testing.T) {
	type doc struct {
		LSN LSN `json:"lsn"`
	}
	tests := []struct {
		name    string
		in      string
		want    LSN
		wantOut string
		wantErr bool
	}{
		{name: "short", in: `{"lsn":"0/3000028"}`, want: 0x3000028, wantOut: `{"lsn":"0/03000028"}`},
		{name: "padded", in: `{"lsn":"1/0000A028"}`, want: 0x10000A028, wantOut: `{"lsn":"1/0000A028"}`},
		{name: "number", in: `{"lsn":50331688}`, wantErr: true},
		{name: "garbage", in: `{"lsn":"x"}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d doc
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Unmarshal(%s) = %v, want an error", tt.in, d.LSN)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal(%s): %v", tt.in, err)
			}
			if d.LSN != tt.want {
				t.Errorf("Unmarshal(%s) = %v, want %v", tt.in, d.LSN, tt.want)
			}
			out, err := json.Marshal(d)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if string(out) != tt.wantOut {
				t.Errorf("Marshal = %s, want %s", out, tt.wantOut)
			}
		})
	}
}
