package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/internal/testenv"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

type getResult struct {
	r   *pb.GetResponse
	err error
}

func asyncGet(p *nodeProc, key string, minVersion uint64) chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := p.client.Get(ctx, &pb.GetRequest{Key: key, MinVersion: minVersion})
		ch <- getResult{r, err}
	}()
	return ch
}

func waitReceived(t *testing.T, o *fakeOrigin, key string) {
	t.Helper()
	select {
	case k := <-o.received:
		if k != key {
			t.Fatalf("origin received a load of %q, want %q", k, key)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the node never loaded %q from the origin", key)
	}
}

func metric(t *testing.T, p *nodeProc, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body := httpBody(ctx, "http://"+p.http+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestSharedLoadAnswersEachRequestByItsOwnMinVersion is the read-path issue's first finding,
// over gRPC against a cachenode process with an origin the test holds back.
func TestSharedLoadAnswersEachRequestByItsOwnMinVersion(t *testing.T) {
	c := newCluster(t)
	n := c.startNode(true)

	t.Run("a write lands while a plain load of the absent key is in flight", func(t *testing.T) {
		hold := make(chan struct{})
		c.origin.setHold(hold)
		plain := asyncGet(n, "a", 0)
		waitReceived(t, c.origin, "a") // the plain load read the origin: a is absent
		c.origin.put("a", 5, "five")   // the write is acknowledged at v5
		ryw := asyncGet(n, "a", 5)
		waitReceived(t, c.origin, "a") // the min_version=5 request did not take the old load's answer
		c.origin.setHold(nil)
		close(hold)
		r := <-ryw
		if r.err != nil {
			if status.Code(r.err) != codes.Unavailable {
				t.Fatalf("min_version=5: %v, want v5 or Unavailable", r.err)
			}
		} else if !r.r.Found || r.r.Version != 5 || string(r.r.Value) != "five" {
			t.Fatalf("min_version=5: found=%v version=%d tier=%s, want five@5", r.r.Found, r.r.Version, r.r.Tier)
		}
		if p := <-plain; p.err != nil || (p.r.Version != 0 && p.r.Version != 5) {
			t.Fatalf("plain read: %+v %v", p.r, p.err)
		}
	})

	t.Run("a plain request joins a load the origin cannot meet", func(t *testing.T) {
		c.origin.put("b", 1, "one")
		hold := make(chan struct{})
		c.origin.setHold(hold)
		before := metric(t, n, "cachewire_shared_loads_total")
		high := asyncGet(n, "b", 9)
		waitReceived(t, c.origin, "b")
		plain := asyncGet(n, "b", 0)
		testenv.WaitFor(t, 30*time.Second, func() string {
			if now := metric(t, n, "cachewire_shared_loads_total"); now == before {
				return fmt.Sprintf("the plain request has not joined the load yet (shared loads %s)", now)
			}
			return ""
		})
		c.origin.setHold(nil)
		close(hold)
		if r := <-high; status.Code(r.err) != codes.Unavailable || !strings.Contains(r.err.Error(), "origin is behind") {
			t.Fatalf("min_version=9: %+v %v, want Unavailable: origin is behind", r.r, r.err)
		}
		if p := <-plain; p.err != nil || !p.r.Found || p.r.Version != 1 || string(p.r.Value) != "one" {
			t.Fatalf("plain read joined the min_version=9 load: %+v %v, want one@1", p.r, p.err)
		}
	})
}

func httpBody(ctx context.Context, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
