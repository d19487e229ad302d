package manifest

import "io"

// ParsePGManifestFrom is a stand-in until the streaming parser lands.
func ParsePGManifestFrom(r io.Reader) (*PGManifest, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return ParsePGManifest(data)
}
