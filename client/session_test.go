package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

func TestSessionTokenRoundTrip(t *testing.T) {
	a := NewSession(nil, nil)
	a.remember("user:1", 7)
	a.remember("cart:9", 12)
	a.remember("user:1", 3) // older: ignored
	tok := a.Export()
	if !strings.HasPrefix(tok, sessionTokenPrefix) || strings.ContainsAny(tok, "+/= ;,") {
		t.Fatalf("token %q is not URL- and cookie-safe", tok)
	}
	b, err := ImportSession(nil, nil, tok)
	if err != nil {
		t.Fatal(err)
	}
	if b.Version("user:1") != 7 || b.Version("cart:9") != 12 || b.Version("other") != 0 {
		t.Fatalf("imported versions %d %d %d, want 7 12 0", b.Version("user:1"), b.Version("cart:9"), b.Version("other"))
	}
	// Import merges: the newer version of each key wins.
	b.remember("cart:9", 20)
	if err := b.Import(tok); err != nil || b.Version("cart:9") != 20 {
		t.Fatalf("merge: %v, cart:9 at %d, want 20", err, b.Version("cart:9"))
	}
	if s, err := ImportSession(nil, nil, ""); err != nil || s.Version("user:1") != 0 {
		t.Fatalf("empty token: %v", err)
	}
}

func TestSessionMemoryIsBounded(t *testing.T) {
	s := NewSession(nil, nil, SessionKeys(2))
	s.remember("a", 1)
	s.remember("b", 2)
	s.Version("a") // a is now more recent than b
	s.remember("c", 3)
	if s.Version("b") != 0 || s.Version("a") != 1 || s.Version("c") != 3 {
		t.Fatalf("versions a=%d b=%d c=%d, want the least recently used (b) forgotten", s.Version("a"), s.Version("b"), s.Version("c"))
	}
	many := NewSession(nil, nil)
	for i := range DefaultSessionKeys + 10 {
		many.remember(fmt.Sprint("k", i), 1)
	}
	if n := len(many.st.versions.Keys()); n != DefaultSessionKeys {
		t.Fatalf("session holds %d keys, want %d", n, DefaultSessionKeys)
	}
	// The token keeps the most recent keys first, and importing it into a smaller session keeps them.
	small, err := ImportSession(nil, nil, many.Export(), SessionKeys(3))
	if err != nil {
		t.Fatal(err)
	}
	if small.Version(fmt.Sprint("k", DefaultSessionKeys+9)) != 1 || small.Version("k10") != 0 {
		t.Fatal("a smaller importing session did not keep the most recent keys")
	}
}

func TestBadSessionTokens(t *testing.T) {
	good := NewSession(nil, nil)
	good.remember("k", 5)
	tok := good.Export()
	for _, bad := range []string{"nope", sessionTokenPrefix + "!!!", tok[:len(tok)-2], tok + "AA", sessionTokenPrefix + "_w"} {
		s := NewSession(nil, nil)
		s.remember("k", 1)
		if err := s.Import(bad); !errors.Is(err, ErrBadSessionToken) || s.Version("k") != 1 {
			t.Errorf("Import(%q) = %v (k at %d), want ErrBadSessionToken and the session unchanged", bad, err, s.Version("k"))
		}
	}
}

// TestImportedSessionReadsItsWrites: a token exported after a write, imported in another
// process's session, makes that session's reads ask for at least the written version.
func TestImportedSessionReadsItsWrites(t *testing.T) {
	var asked atomic.Uint64
	f := &fakeNode{get: func(_ int64, req *pb.GetRequest) (*pb.GetResponse, error) {
		asked.Store(req.MinVersion)
		return &pb.GetResponse{Key: req.Key, Found: true, Version: req.MinVersion}, nil
	}}
	c, err := NewCache(serve(t, f))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := NewSession(c, nil)
	first.remember("user:1", 42) // as Put does with the write's version
	second, err := ImportSession(c, nil, first.Export())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Get(context.Background(), "user:1"); err != nil || asked.Load() != 42 {
		t.Fatalf("Get: %v, min_version asked %d, want 42", err, asked.Load())
	}
}
