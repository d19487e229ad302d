package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// The streaming decoders read a manifest once, front to back, without
// holding it: with 121,000 files pgstow's manifest and PostgreSQL's
// backup_manifest are about 20 MB each, and holding the bytes next to the
// decoded copy is what used to set a restore's peak memory.
//
// Both documents end with a checksum member that covers every byte before
// its line. sealedReader hashes the bytes as the JSON decoder pulls them
// through, holding back only a tail window in which the checksum line is
// found at the end by splitChecksum, so a streamed manifest is accepted or
// refused by the same rules as one held whole. The one difference is a
// bound: the checksum's line and everything after it must fit in
// tailWindowBytes. Encode and PostgreSQL write about 90 bytes there; only
// tens of kilobytes of blanks around the checksum could exceed it.

// tailWindowBytes is the least the sealed reader holds back unhashed.
const tailWindowBytes = 64 << 10

// sealedReader passes r through to a decoder, hashing all but the last
// bytes read, and checks the checksum member named key once r is drained.
type sealedReader struct {
	r    io.Reader
	key  string
	h    hash.Hash
	held []byte // not yet hashed: the last tailWindowBytes to 2×tailWindowBytes read
	// hashed counts the bytes in h, to tell a short document (all of it
	// held) from a long one whose checksum line might start before held.
	hashed int64
	err    error // the first read error other than io.EOF
	eof    bool
}

func newSealedReader(r io.Reader, key string) *sealedReader {
	return &sealedReader{r: r, key: key, h: sha256.New()}
}

func (s *sealedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.hold(p[:n])
	}
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		s.eof = true
	case s.err == nil:
		s.err = err
	}
	return n, err
}

// hold appends b to the held tail and hashes what falls out of the window.
// The window slides in steps of tailWindowBytes, so each byte is copied at
// most twice; held grows as needed, so a small document costs little.
func (s *sealedReader) hold(b []byte) {
	const most = 2 * tailWindowBytes
	for len(b) > 0 {
		if len(s.held) == most {
			out := len(s.held) - tailWindowBytes
			s.h.Write(s.held[:out])
			s.hashed += int64(out)
			s.held = s.held[:copy(s.held, s.held[out:])]
		}
		n := min(len(b), most-len(s.held))
		s.held = append(s.held, b[:n]...)
		b = b[n:]
	}
}

// drain reads what the decoder left, so the checksum covers the whole
// object; a decoder that stopped early on an error leaves the rest.
func (s *sealedReader) drain() {
	if !s.eof && s.err == nil {
		_, _ = io.Copy(io.Discard, s)
	}
}

// verify drains r and checks the checksum member as splitChecksum and the
// whole-document decoders did. what names the document in a mismatch,
// which callers return as it is; they prefix other errors with what they
// were doing.
func (s *sealedReader) verify(what string) error {
	s.drain()
	if s.err != nil {
		return fmt.Errorf("read: %w", s.err)
	}
	covered, stored, err := splitChecksum(s.held, s.key)
	if err != nil {
		if s.hashed > 0 {
			// The window slid: the checksum's line may have started
			// before it.
			err = fmt.Errorf("%w (in the last %d bytes, which must hold the checksum's line and all that follows)", err, len(s.held))
		}
		return err
	}
	s.h.Write(covered)
	sum := s.h.Sum(nil)
	if computed := hex.EncodeToString(sum); !strings.EqualFold(stored, computed) {
		return fmt.Errorf("%s %w: stored %s, computed %s — the %s is corrupt", what, ErrChecksumMismatch, stored, computed, what)
	}
	return nil
}

// streamFatal reports whether err from a json.Decoder ends the document:
// a syntax error, a truncation or a read error. Anything else (a type
// error, a bad LSN) concerns one value, which the decoder has consumed
// whole, so decoding can go on as json.Unmarshal does.
func streamFatal(err error, s *sealedReader) bool {
	var syn *json.SyntaxError
	return errors.As(err, &syn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || s.err != nil
}

// objectStream walks the members of one top-level JSON object. It keeps
// the first error of each kind, so the caller can rank them as the
// whole-document decoders did: syntax before field types before semantics.
type objectStream struct {
	dec   *json.Decoder
	s     *sealedReader
	fatal error // syntax, truncation or read error; decoding stopped
	field error // the first value that did not fit its Go type
}

func newObjectStream(s *sealedReader) *objectStream {
	return &objectStream{dec: json.NewDecoder(s), s: s}
}

// members calls fn with each member's key; fn must consume the value.
// It checks that the document is one object and nothing after it.
func (o *objectStream) members(fn func(key string) error) {
	tok, err := o.dec.Token()
	if err != nil {
		o.fatal = err
		return
	}
	if tok != json.Delim('{') {
		o.fatal = fmt.Errorf("the document is not a JSON object (it starts with %v)", tok)
		return
	}
	for o.dec.More() {
		tok, err := o.dec.Token()
		if err != nil {
			o.fatal = err
			return
		}
		key, ok := tok.(string)
		if !ok {
			o.fatal = fmt.Errorf("object key %v is not a string", tok)
			return
		}
		if err := fn(key); err != nil {
			o.fatal = err
			return
		}
	}
	if _, err := o.dec.Token(); err != nil { // the closing '}'
		o.fatal = err
		return
	}
	if tok, err := o.dec.Token(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = fmt.Errorf("invalid character %v after top-level value", tok)
		}
		o.fatal = err
	}
}

// decode decodes the next value into v, recording an error of the value
// itself and returning one that ends the stream.
func (o *objectStream) decode(v any) error {
	if err := o.dec.Decode(v); err != nil {
		if streamFatal(err, o.s) {
			return err
		}
		o.fieldErr(err)
	}
	return nil
}

func (o *objectStream) fieldErr(err error) {
	if o.field == nil {
		o.field = err
	}
}

// member decodes one member's value into doc exactly as json.Unmarshal of
// the whole document would have: same key matching (case-insensitive),
// same merging into what doc already holds, unknown keys ignored. It costs
// a copy of the value, so it is for the small members; the large arrays
// are streamed element by element by the callers.
func (o *objectStream) member(key string, doc any) error {
	var raw json.RawMessage
	if err := o.dec.Decode(&raw); err != nil {
		return err // a RawMessage takes any value: this is the stream's error
	}
	return o.memberRaw(key, raw, doc)
}

// memberRaw is member for a value already read.
func (o *objectStream) memberRaw(key string, raw json.RawMessage, doc any) error {
	k, err := json.Marshal(key)
	if err != nil {
		return err
	}
	obj := make([]byte, 0, len(k)+len(raw)+3)
	obj = append(obj, '{')
	obj = append(obj, k...)
	obj = append(obj, ':')
	obj = append(obj, raw...)
	obj = append(obj, '}')
	if err := json.Unmarshal(obj, doc); err != nil {
		o.fieldErr(err)
	}
	return nil
}

// arrayStart reads the first token of an array member. It returns true
// when an array follows; null leaves the slice to the caller (ok false,
// isNull true); anything else is a type error, with the value skipped.
func (o *objectStream) arrayStart(name string) (ok, isNull bool, err error) {
	tok, err := o.dec.Token()
	if err != nil {
		return false, false, err
	}
	switch tok {
	case json.Delim('['):
		return true, false, nil
	case nil:
		return false, true, nil
	case json.Delim('{'):
		o.fieldErr(fmt.Errorf("%q is an object, want an array", name))
		return false, false, o.skipRest(1)
	}
	o.fieldErr(fmt.Errorf("%q is %v, want an array", name, tok))
	return false, false, nil
}

// skipRest consumes tokens until depth open delimiters are closed.
func (o *objectStream) skipRest(depth int) error {
	for depth > 0 {
		tok, err := o.dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// DecodeFrom is Decode reading from r: it verifies the checksum Encode
// wrote while decoding, holds neither the bytes nor more than one file
// entry's worth of JSON at a time, and returns nothing unless the
// checksum verified. Errors rank as Decode's did: checksum, then the
// document's syntax, then the format version (so a newer major version is
// reported as ErrUnsupportedVersion rather than as the field it changed),
// then field types, then validation.
func DecodeFrom(r io.Reader) (*Backup, error) {
	return decodeFrom(r, true)
}

// DecodeFromWithoutFiles is DecodeFrom for callers that need everything
// but the file records (a backup looking up the chunks of the previous
// one): each is still read through, so the checksum and the syntax are
// verified, but none is kept, and Files is nil. With many files that is
// most of a manifest's memory.
func DecodeFromWithoutFiles(r io.Reader) (*Backup, error) {
	return decodeFrom(r, false)
}

func decodeFrom(r io.Reader, keepFiles bool) (*Backup, error) {
	s := newSealedReader(r, checksumKey)
	o := newObjectStream(s)
	var (
		b       Backup
		version struct {
			FormatVersion *string `json:"format_version"`
		}
		versionErr error
	)
	o.members(func(key string) error {
		if strings.EqualFold(key, "files") {
			if !keepFiles {
				return o.skipFiles()
			}
			return o.files(&b)
		}
		if strings.EqualFold(key, "format_version") {
			// Read as peekVersion did: a pointer, so null means missing.
			var raw json.RawMessage
			if err := o.dec.Decode(&raw); err != nil {
				return err
			}
			if err := json.Unmarshal(raw, &version.FormatVersion); err != nil && versionErr == nil {
				versionErr = fmt.Errorf("read format_version: %w", err)
			}
			return o.memberRaw(key, raw, &b)
		}
		return o.member(key, &b)
	})
	if err := s.verify("manifest"); errors.Is(err, ErrChecksumMismatch) {
		return nil, err
	} else if err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	switch {
	case o.fatal != nil:
		// Worded as when the version was read first, from the whole
		// document: a document that is not JSON has no readable version.
		return nil, fmt.Errorf("decode manifest: read format_version: %w", o.fatal)
	case versionErr != nil:
		return nil, fmt.Errorf("decode manifest: %w", versionErr)
	case version.FormatVersion == nil:
		return nil, errors.New("decode manifest: missing format_version")
	}
	if err := checkVersion(*version.FormatVersion); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	if o.field != nil {
		return nil, fmt.Errorf("decode manifest: %w", o.field)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("decode manifest %s: %w", b.ID, err)
	}
	return &b, nil
}

// skipFiles reads the "files" array through, one element at a time into
// the same record, keeping none.
func (o *objectStream) skipFiles() error {
	ok, _, err := o.arrayStart("files")
	if err != nil || !ok {
		return err
	}
	var f File
	for o.dec.More() {
		f = File{}
		if err := o.decode(&f); err != nil {
			return err
		}
	}
	_, err = o.dec.Token() // the closing ']'
	return err
}

// files streams the "files" array into b.Files one element at a time. It
// reuses the elements b.Files already holds, as json.Unmarshal does when
// a key repeats, so the result is the same as decoding the whole document.
func (o *objectStream) files(b *Backup) error {
	ok, isNull, err := o.arrayStart("files")
	if err != nil || !ok {
		if isNull {
			b.Files = nil
		}
		return err
	}
	files := b.Files[:0]
	for o.dec.More() {
		if len(files) < cap(files) {
			files = files[:len(files)+1]
		} else {
			files = append(files, File{})
		}
		if err := o.decode(&files[len(files)-1]); err != nil {
			return err
		}
	}
	if _, err := o.dec.Token(); err != nil { // the closing ']'
		return err
	}
	if len(files) == 0 {
		files = []File{}
	}
	b.Files = files
	return nil
}
