package kms

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
)

// harness is one provider under the common contract: two keys and a way
// to disable one, as an operator revokes it.
type harness struct {
	open       func(t *testing.T, uri string) Wrapper
	keyA, keyB string
	disable    func(t *testing.T, uri string)
}

// runWrapperSuite checks what repository/keys.go relies on: a wrap
// unwraps with the URI Wrap returned, and with nothing else; a changed
// ciphertext or a disabled key fails, with a one-line message.
func runWrapperSuite(t *testing.T, h harness) {
	ctx := t.Context()
	dk := make([]byte, 32)
	rand.Read(dk)
	a := h.open(t, h.keyA)
	uri, ct, err := a.Wrap(ctx, dk)
	if err != nil {
		t.Fatalf("wrap: %v", err)
	}
	if bytes.Contains(ct, dk) {
		t.Fatal("the wrapped key contains the key")
	}
	t.Run("round trip", func(t *testing.T) {
		got, err := h.open(t, uri).Unwrap(ctx, ct)
		if err != nil || !bytes.Equal(got, dk) {
			t.Fatalf("unwrap with %s: %x, %v", uri, got, err)
		}
	})
	mustFail := func(t *testing.T, w Wrapper, ct []byte) {
		t.Helper()
		got, err := w.Unwrap(ctx, ct)
		if err == nil {
			t.Fatalf("unwrap succeeded (%x)", got)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("message spans lines: %q", err)
		}
		t.Logf("refused: %v", err)
	}
	t.Run("other key", func(t *testing.T) { mustFail(t, h.open(t, h.keyB), ct) })
	t.Run("changed ciphertext", func(t *testing.T) {
		bad := bytes.Clone(ct)
		bad[len(bad)-1] ^= 1 // in the tag or the RSA block: any format authenticates it
		mustFail(t, h.open(t, uri), bad)
	})
	t.Run("disabled key", func(t *testing.T) {
		h.disable(t, h.keyA)
		mustFail(t, h.open(t, uri), ct)
		if _, _, err := h.open(t, h.keyA).Wrap(ctx, dk); err == nil {
			t.Error("wrap with a disabled key succeeded")
		}
	})
}
