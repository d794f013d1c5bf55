package client

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// DefaultSessionKeys is how many keys a Session remembers unless SessionKeys says otherwise.
const DefaultSessionKeys = 1024

// Session gives one user, or one unit of work, read-your-writes across any nodes: it remembers
// the version of every key it wrote and passes it as MinVersion on its reads of that key, so a
// read never returns something older than the session's own write. It is safe for concurrent use.
//
// Its memory is bounded: it remembers the most recently used keys only (DefaultSessionKeys, or
// SessionKeys). A key it forgot is read with no floor, as by a new session.
//
// To carry a session across processes (a web frontend behind several API servers), Export its
// state as a token, put the token in a cookie or a header, and ImportSession it in the next
// request's process.
type Session struct {
	cache  *Cache
	writer *Writer
	st     *sessionState
}

type sessionState struct {
	mu       sync.Mutex
	versions *simplelru.LRU[string, uint64]
}

// SessionOption configures a Session.
type SessionOption func(*sessionOptions)

type sessionOptions struct{ keys int }

// SessionKeys bounds the keys a session remembers (at least 1; default DefaultSessionKeys).
func SessionKeys(n int) SessionOption { return func(o *sessionOptions) { o.keys = max(n, 1) } }

// NewSession returns a session that writes through w and reads through c.
func NewSession(c *Cache, w *Writer, opts ...SessionOption) *Session {
	o := sessionOptions{keys: DefaultSessionKeys}
	for _, opt := range opts {
		opt(&o)
	}
	lru, _ := simplelru.NewLRU[string, uint64](o.keys, nil) // size >= 1: cannot fail
	return &Session{cache: c, writer: w, st: &sessionState{versions: lru}}
}

// ErrBadSessionToken is returned by ImportSession and Session.Import for a token Export did not
// produce (or that was cut short).
var ErrBadSessionToken = errors.New("client: bad session token")

// sessionTokenPrefix starts every token; the digit is the format's version.
const sessionTokenPrefix = "cws1."

// Export returns the session's state as a compact, URL-safe token: the key/version pairs it
// remembers, most recently used first. The token is not signed or encrypted: it shows the keys,
// and a client that can edit it can only make its own reads stricter (or fail as "origin is
// behind"). Sign it (as web frameworks sign cookies) when it crosses a trust boundary, and keep
// SessionKeys small when it must fit in a cookie.
func (s *Session) Export() string {
	s.st.mu.Lock()
	keys := s.st.versions.Keys() // oldest first
	buf := binary.AppendUvarint(nil, uint64(len(keys)))
	for i := len(keys) - 1; i >= 0; i-- {
		v, _ := s.st.versions.Peek(keys[i])
		buf = binary.AppendUvarint(buf, uint64(len(keys[i])))
		buf = append(buf, keys[i]...)
		buf = binary.AppendUvarint(buf, v)
	}
	s.st.mu.Unlock()
	return sessionTokenPrefix + base64.RawURLEncoding.EncodeToString(buf)
}

// ImportSession returns a session that writes through w, reads through c, and starts from the
// state a Session exported as token. An empty token gives a new session.
func ImportSession(c *Cache, w *Writer, token string, opts ...SessionOption) (*Session, error) {
	s := NewSession(c, w, opts...)
	if token == "" {
		return s, nil
	}
	if err := s.Import(token); err != nil {
		return nil, err
	}
	return s, nil
}

// Import merges a token from Export into the session: for each key, the session keeps the newer
// of its own version and the token's. On an error, the session is unchanged.
func (s *Session) Import(token string) error {
	pairs, err := decodeSessionToken(token)
	if err != nil {
		return err
	}
	for i := len(pairs) - 1; i >= 0; i-- { // oldest first, so the most recent stay most recent
		s.remember(pairs[i].key, pairs[i].version)
	}
	return nil
}

type sessionPair struct {
	key     string
	version uint64
}

func decodeSessionToken(token string) ([]sessionPair, error) {
	body, ok := strings.CutPrefix(token, sessionTokenPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: does not start with %q", ErrBadSessionToken, sessionTokenPrefix)
	}
	buf, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSessionToken, err)
	}
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(buf)
		if n <= 0 {
			return 0, false
		}
		buf = buf[n:]
		return v, true
	}
	count, ok := next()
	if !ok || count > uint64(len(buf)) {
		return nil, fmt.Errorf("%w: bad key count", ErrBadSessionToken)
	}
	pairs := make([]sessionPair, 0, count)
	for range count {
		klen, ok := next()
		if !ok || klen > uint64(len(buf)) {
			return nil, fmt.Errorf("%w: cut short", ErrBadSessionToken)
		}
		key := string(buf[:klen])
		buf = buf[klen:]
		v, ok := next()
		if !ok {
			return nil, fmt.Errorf("%w: cut short", ErrBadSessionToken)
		}
		pairs = append(pairs, sessionPair{key, v})
	}
	if len(buf) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last key", ErrBadSessionToken, len(buf))
	}
	return pairs, nil
}

// Via returns the same session reading through another node: both share what the session wrote
// and read.
func (s *Session) Via(c *Cache) *Session {
	return &Session{cache: c, writer: s.writer, st: s.st}
}

func (s *Session) remember(key string, v uint64) {
	s.st.mu.Lock()
	if cur, _ := s.st.versions.Get(key); v > cur {
		s.st.versions.Add(key, v)
	}
	s.st.mu.Unlock()
}

// Observe records that the session wrote key at version by other means, such as a service's own
// write API that returns the version it committed: later reads of key through the session ask
// for it (read-your-writes), as after Put.
func (s *Session) Observe(key string, version uint64) { s.remember(key, version) }

// Version returns the newest version of key the session wrote or read, or 0 (also for a key it
// no longer remembers).
func (s *Session) Version(key string) uint64 {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	v, _ := s.st.versions.Get(key)
	return v
}

// Put writes through the writer and remembers the version.
func (s *Session) Put(ctx context.Context, key string, value []byte, opts ...WriteOption) (Write, error) {
	w, err := s.writer.Put(ctx, key, value, opts...)
	if err == nil {
		s.remember(key, w.Version)
	}
	return w, err
}

// Delete deletes through the writer and remembers the deletion's version.
func (s *Session) Delete(ctx context.Context, key string, opts ...WriteOption) (Write, error) {
	w, err := s.writer.Delete(ctx, key, opts...)
	if err == nil {
		s.remember(key, w.Version)
	}
	return w, err
}

// Get reads key at least as new as the session's own last write of it.
func (s *Session) Get(ctx context.Context, key string, opts ...GetOption) (Item, error) {
	var it Item
	var err error
	if len(opts) == 0 {
		it, err = s.cache.get(ctx, key, s.Version(key), nil)
	} else {
		it, err = s.cache.Get(ctx, key, append(opts, MinVersion(s.Version(key)))...)
	}
	if err == nil && it.Version > 0 {
		// Reads are monotonic within the session too: never go back behind what it has seen.
		s.remember(key, it.Version)
	}
	return it, err
}

// BatchGet reads keys, each at least as new as the session's own last write of it.
func (s *Session) BatchGet(ctx context.Context, keys []string) ([]Item, error) {
	reqs := make([]*pb.GetRequest, len(keys))
	for i, k := range keys {
		reqs[i] = &pb.GetRequest{Key: k, MinVersion: s.Version(k)}
	}
	items, err := s.cache.batchGet(ctx, reqs)
	for _, it := range items {
		if it.Version > 0 {
			s.remember(it.Key, it.Version)
		}
	}
	return items, err
}
