package client

import (
	"context"
	"sync"

	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// Session gives one user, or one unit of work, read-your-writes across any nodes: it remembers
// the version of every key it wrote and passes it as MinVersion on its reads of that key, so a
// read never returns something older than the session's own write. It is safe for concurrent use.
type Session struct {
	cache  *Cache
	writer *Writer
	st     *sessionState
}

type sessionState struct {
	mu       sync.Mutex
	versions map[string]uint64
}

// NewSession returns a session that writes through w and reads through c.
func NewSession(c *Cache, w *Writer) *Session {
	return &Session{cache: c, writer: w, st: &sessionState{versions: make(map[string]uint64)}}
}

// Via returns the same session reading through another node: both share what the session wrote
// and read.
func (s *Session) Via(c *Cache) *Session {
	return &Session{cache: c, writer: s.writer, st: s.st}
}

func (s *Session) remember(key string, v uint64) {
	s.st.mu.Lock()
	if v > s.st.versions[key] {
		s.st.versions[key] = v
	}
	s.st.mu.Unlock()
}

// Version returns the newest version of key the session wrote or read, or 0.
func (s *Session) Version(key string) uint64 {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return s.st.versions[key]
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
	opts = append(opts, MinVersion(s.Version(key)))
	it, err := s.cache.Get(ctx, key, opts...)
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
