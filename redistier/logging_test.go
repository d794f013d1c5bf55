package redistier

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/retry"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestGoRedisLogsGoThroughSlog: go-redis's own lines (here: a pool that cannot dial) come out of
// the tier's slog logger, so --log-format json output stays JSON.
func TestGoRedisLogsGoThroughSlog(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	var buf syncBuffer
	tier, err := New(Config{Addrs: []string{dead}, DialTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), "go-redis") && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _, _ = tier.Get(ctx, "k")
		cancel()
	}
	out := buf.String()
	if !strings.Contains(out, `"component":"go-redis"`) {
		t.Fatalf("no go-redis line in the slog output:\n%s", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("a line that is not JSON: %q", line)
		}
	}
}

// TestGoRedisLogsAreRateLimited: a flood of go-redis lines (every pool failing to dial while a
// cluster fails over) writes at most 5 a second, and the next line says how many were dropped.
func TestGoRedisLogsAreRateLimited(t *testing.T) {
	var buf syncBuffer
	l := newRedisLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	for range 100 {
		l.Printf(context.Background(), "redis: connection pool: failed to dial")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines written for 100 in a burst, want 5:\n%s", len(lines), buf.String())
	}
	l.limit = retry.NewLogLimiter(5, time.Second) // the next period
	l.Printf(context.Background(), "redis: connection pool: failed to dial")
	if !strings.Contains(buf.String(), `"suppressed":95`) {
		t.Fatalf("the line after the burst does not say 95 were dropped:\n%s", buf.String())
	}
}
