package repository

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
)

// fakeKMS holds wrapping keys by URI, as a KMS does, and can disable one.
// It seals with AES-GCM, so a ciphertext of one key does not open with
// another.
type fakeKMS struct {
	keys     map[string]cipher.AEAD
	disabled map[string]bool
	unwraps  int
	opened   []string // the URIs open was given
}

func newFakeKMS(t *testing.T, uris ...string) *fakeKMS {
	t.Helper()
	k := &fakeKMS{keys: map[string]cipher.AEAD{}, disabled: map[string]bool{}}
	for _, u := range uris {
		secret := make([]byte, 32)
		rand.Read(secret)
		block, err := aes.NewCipher(secret)
		if err != nil {
			t.Fatal(err)
		}
		k.keys[u], _ = cipher.NewGCM(block)
	}
	return k
}

// open finds a key by its URI without the query (the address it is
// reached at), as a KMS holds it whatever endpoint reaches it.
func (k *fakeKMS) open(_ context.Context, uri string) (KeyWrapper, error) {
	k.opened = append(k.opened, uri)
	for u := range k.keys {
		if uriWithoutQuery(u) == uriWithoutQuery(uri) {
			return fakeWrapper{k, u}, nil
		}
	}
	return nil, fmt.Errorf("no such KMS key %s", uri)
}

type fakeWrapper struct {
	k   *fakeKMS
	uri string
}

func (w fakeWrapper) URI() string { return w.uri }

func (w fakeWrapper) Wrap(_ context.Context, dk []byte) (string, []byte, error) {
	if w.k.disabled[w.uri] {
		return "", nil, errors.New("key is disabled")
	}
	nonce := make([]byte, 12)
	rand.Read(nonce)
	return w.uri, w.k.keys[w.uri].Seal(nonce, nonce, dk, nil), nil
}

func (w fakeWrapper) Unwrap(_ context.Context, ct []byte) ([]byte, error) {
	w.k.unwraps++
	if w.k.disabled[w.uri] {
		return nil, errors.New("key is disabled\n(second line of the KMS's message)")
	}
	if len(ct) < 12 {
		return nil, errors.New("invalid ciphertext")
	}
	return w.k.keys[w.uri].Open(nil, ct[:12], ct[12:], nil)
}

const (
	kmsA = "awskms://alias/a?region=eu-west-1"
	kmsB = "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/b"
)

// newKMSRepo makes a repository keyed through kms's key uri the way the
// first backup does, with one WAL file in it, and returns its store.
func newKMSRepo(t *testing.T, kms *fakeKMS, uri string) providers.Store {
	t.Helper()
	ctx := t.Context()
	store := mem.New()
	w, _ := kms.open(ctx, uri)
	dk, _, err := InitDataKey(ctx, store, w, providers.Retention{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := encryption.NewKey(dk)
	if err != nil {
		t.Fatal(err)
	}
	r := NewEncrypted(store, key)
	if err := r.Bind(ctx, "7000000000000000001", seg); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutWAL(ctx, chunker.NewCompressor(), "00000002.history", []byte("history 4711")); err != nil {
		t.Fatal(err)
	}
	return store
}

// openKMSRepo opens store the way a later command does: through a wrapped
// copy, checked against pgstow.json, and reads the WAL file back.
func openKMSRepo(ctx context.Context, store providers.Store, kms *fakeKMS, only string) error {
	cfg, err := New(store).Config(ctx)
	if err != nil {
		return err
	}
	dk, _, err := UnwrapDataKey(ctx, store, cfg, kms.open, only)
	if err != nil {
		return err
	}
	key, err := encryption.NewKey(dk)
	if err != nil {
		return err
	}
	r := NewEncrypted(store, key)
	if err := r.CheckKey(ctx); err != nil {
		return err
	}
	data, _, err := r.FetchWAL(ctx, "00000002.history")
	if err != nil {
		return err
	}
	if string(data) != "history 4711" {
		return fmt.Errorf("read %q back", data)
	}
	return nil
}

func TestKMSKeyedRepository(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(t *testing.T, store providers.Store, kms *fakeKMS)
		only    string
		wantErr string // "" for success
		// tampered: the error is the configuration's MAC failing, not a
		// refused key (ErrEncryption)
		tampered bool
	}{
		{name: "round trip"},
		{name: "pinned to its key", only: "awskms://alias/a"},
		{name: "pinned to another key", only: kmsB, wantErr: "none is wrapped by " + kmsB + ", only by " + kmsA},
		{name: "disabled key", change: func(t *testing.T, _ providers.Store, kms *fakeKMS) { kms.disabled[kmsA] = true }, wantErr: "key is disabled (second line"},
		{name: "key gone from the KMS", change: func(t *testing.T, _ providers.Store, kms *fakeKMS) { delete(kms.keys, kmsA) }, wantErr: "no such KMS key"},
		{name: "no wrapped copy", change: func(t *testing.T, store providers.Store, _ *fakeKMS) {
			if err := store.Delete(t.Context(), WrappedKeyKey(kmsA)); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "holds none under keys/"},
		{name: "copy of another data key", change: func(t *testing.T, store providers.Store, kms *fakeKMS) {
			// A copy of B wrapping some other key, sorted before A's.
			w, _ := kms.open(t.Context(), kmsB)
			other := make([]byte, 32)
			if _, err := AddWrappedKey(t.Context(), store, other, w, providers.Retention{}); err != nil {
				t.Fatal(err)
			}
			kms.disabled[kmsA] = true
		}, wantErr: "wraps the data key of fingerprint"},
		{name: "copy swapped for another key's", change: func(t *testing.T, store providers.Store, kms *fakeKMS) {
			// Someone with write access replaces both pgstow.json and the
			// copy: the copy fits the new pgstow.json but its MAC does not.
			cfg, err := New(store).Config(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			other := make([]byte, 32)
			rand.Read(other)
			ok, _ := encryption.NewKey(other)
			if err := store.Delete(t.Context(), WrappedKeyKey(kmsA)); err != nil {
				t.Fatal(err)
			}
			w, _ := kms.open(t.Context(), kmsA)
			if _, err := AddWrappedKey(t.Context(), store, other, w, providers.Retention{}); err != nil {
				t.Fatal(err)
			}
			c := *cfg
			e := *cfg.Encryption
			e.KeyFingerprint = ok.Fingerprint()
			c.Encryption = &e
			putConfig(t, store, &c)
		}, wantErr: "has been changed since it was written", tampered: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kms := newFakeKMS(t, kmsA, kmsB)
			store := newKMSRepo(t, kms, kmsA)
			if tc.change != nil {
				tc.change(t, store, kms)
			}
			rec := &recordingStore{Store: store}
			err := openKMSRepo(t.Context(), rec, kms, tc.only)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("open = %v, want an error with %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if !tc.tampered && !errors.Is(err, ErrEncryption) {
				t.Errorf("error %v is not ErrEncryption", err)
			}
			// Refused before anything but the configuration and the
			// wrapped copies was read.
			for _, k := range rec.gets {
				if k != RepoKey && !strings.HasPrefix(k, KeysPrefix) {
					t.Errorf("read %s before refusing", k)
				}
			}
		})
	}
}

// recordingStore records the keys read through it.
type recordingStore struct {
	providers.Store
	gets []string
}

func (s *recordingStore) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	s.gets = append(s.gets, key)
	return s.Store.Get(ctx, key, offset, length)
}

func putConfig(t *testing.T, store providers.Store, c *manifest.Repo) {
	t.Helper()
	_ = store.Delete(t.Context(), RepoKey)
	data, err := manifest.EncodeRepo(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(t.Context(), RepoKey, bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Rotation adds a copy wrapped by the new key and removes the old one;
// the old key can then be disabled, and the data is as it was.
func TestRotateWrappingKey(t *testing.T) {
	ctx := t.Context()
	kms := newFakeKMS(t, kmsA, kmsB)
	store := newKMSRepo(t, kms, kmsA)
	cfg, err := New(store).Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dk, old, err := UnwrapDataKey(ctx, store, cfg, kms.open, "")
	if err != nil {
		t.Fatal(err)
	}
	wb, _ := kms.open(ctx, kmsB)
	added, err := AddWrappedKey(ctx, store, dk, wb, providers.Retention{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AddWrappedKey(ctx, store, dk, wb, providers.Retention{}); !errors.Is(err, providers.ErrExist) {
		t.Fatalf("second copy with one key: %v, want ErrExist", err)
	}
	if err := store.Delete(ctx, old.Key); err != nil {
		t.Fatal(err)
	}
	kms.disabled[kmsA] = true
	all, err := WrappedKeys(ctx, store)
	if err != nil || len(all) != 1 || all[0].Key != added.Key || all[0].KMS != kmsB {
		t.Fatalf("wrapped keys after rotation: %+v, %v", all, err)
	}
	if err := openKMSRepo(ctx, store, kms, ""); err != nil {
		t.Fatal(err)
	}
}

// Two first uses at once agree on one data key: the second finds the
// first's copy, stored moments ago. A copy older than AdoptWindow (a first
// use that stopped long ago, or one planted by someone who knows its key)
// is refused: nothing but its own fields vouches for it.
func TestInitDataKeyFindsTheFirstCopy(t *testing.T) {
	for _, tc := range []struct {
		name string
		age  time.Duration // of the first copy, as the store reports it
		ok   bool
	}{
		{name: "at the same time", ok: true},
		{name: "within the window", age: AdoptWindow - time.Minute, ok: true},
		{name: "long before", age: AdoptWindow + time.Minute},
		{name: "days before", age: 72 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			kms := newFakeKMS(t, kmsA)
			store := agedStore{mem.New(), tc.age}
			w, _ := kms.open(ctx, kmsA)
			first, adopted, err := InitDataKey(ctx, store, w, providers.Retention{})
			if err != nil || adopted != nil {
				t.Fatalf("first use: adopted %v, %v", adopted, err)
			}
			second, adopted, err := InitDataKey(ctx, store, w, providers.Retention{})
			if !tc.ok {
				if !errors.Is(err, ErrUnclaimedKey) || !errors.Is(err, ErrEncryption) || strings.Contains(err.Error(), "\n") || second != nil {
					t.Fatalf("second first use: %v, want one line of ErrUnclaimedKey", err)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first, second) || adopted == nil || adopted.Key != WrappedKeyKey(kmsA) {
				t.Fatalf("a second first use made another data key, or did not report the copy it took (%+v)", adopted)
			}
		})
	}
}

// agedStore reports every object as stored age ago.
type agedStore struct {
	providers.Store
	age time.Duration
}

func (s agedStore) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	info, err := s.Store.Stat(ctx, key)
	info.ModTime = info.ModTime.Add(-s.age)
	return info, err
}

func TestSameWrappingKey(t *testing.T) {
	for _, tc := range []struct {
		stored, uri string
		want        bool
	}{
		{"awskms://alias/a?region=x", "awskms://alias/a", true},
		{"awskms://alias/a", "awskms://alias/a?region=y", true},
		{"awskms://alias/a", "awskms://alias/ab", false},
		{"azurekv://v.vault.azure.net/keys/k/0123", "azurekv://v.vault.azure.net/keys/k", true},
		{"azurekv://v.vault.azure.net/keys/k/0123", "azurekv://v.vault.azure.net/keys/k/0123", true},
		{"azurekv://v.vault.azure.net/keys/k/0123", "azurekv://v.vault.azure.net/keys/k/4567", false},
		{"azurekv://v.vault.azure.net/keys/k/0123", "azurekv://v.vault.azure.net/keys", false},
	} {
		if got := SameWrappingKey(tc.stored, tc.uri); got != tc.want {
			t.Errorf("SameWrappingKey(%q, %q) = %v, want %v", tc.stored, tc.uri, got, tc.want)
		}
	}
}

// A copy is never opened at an address it records: whoever can write to
// the bucket could plant one whose endpoint receives the host's cloud
// token. An endpoint comes only from the user's pinned URI. A copy not
// named after its own key is skipped.
func TestStoredCopyAddressIgnored(t *testing.T) {
	const evil = "https://evil.example"
	for _, tc := range []struct {
		name       string
		object     func(stored string) string // where the planted copy goes
		only       string
		wantErr    string
		wantOpened string // a URI open must have been given
	}{
		{name: "unpinned", object: WrappedKeyKey, wantOpened: kmsA},
		{name: "pinned", object: WrappedKeyKey, only: "awskms://alias/a?endpoint=https://mine.example",
			wantOpened: "awskms://alias/a?endpoint=https%3A%2F%2Fmine.example&region=eu-west-1"},
		{name: "pinned with a region", object: WrappedKeyKey, only: "awskms://alias/a?region=eu-west-3",
			wantOpened: "awskms://alias/a?region=eu-west-3"},
		{name: "under another name", object: func(string) string { return KeysPrefix + "0.json" },
			wantErr: "keys/0.json (" + kmsA + "&endpoint=" + evil + "): not stored as " + WrappedKeyKey(kmsA)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			kms := newFakeKMS(t, kmsA)
			store := newKMSRepo(t, kms, kmsA)
			all, err := WrappedKeys(ctx, store)
			if err != nil || len(all) != 1 {
				t.Fatalf("copies: %+v, %v", all, err)
			}
			planted := *all[0].WrappedKey
			planted.KMS = kmsA + "&endpoint=" + evil
			data, err := manifest.EncodeWrappedKey(&planted)
			if err != nil {
				t.Fatal(err)
			}
			if err := store.Delete(ctx, all[0].Key); err != nil {
				t.Fatal(err)
			}
			if err := store.Put(ctx, tc.object(planted.KMS), bytes.NewReader(data), int64(len(data)), providers.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			kms.opened = nil
			err = openKMSRepo(ctx, store, kms, tc.only)
			for _, u := range kms.opened {
				if strings.Contains(u, "evil") {
					t.Errorf("opened %s", u)
				}
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("open = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(kms.opened) != 1 || kms.opened[0] != tc.wantOpened {
				t.Errorf("opened %q, want %q", kms.opened, tc.wantOpened)
			}
		})
	}
}
