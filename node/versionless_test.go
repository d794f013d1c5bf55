package node

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
	"github.com/cachewire/cachewire/redistier"
)

// gatedHTTPOrigin is an HTTP origin that answers without a version header. Once armed, a
// request reads the value, tells the test, and answers only when the test releases it.
type gatedHTTPOrigin struct {
	mu      sync.Mutex
	value   map[string]string
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (o *gatedHTTPOrigin) set(key, value string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.value[key] = value
}

func (o *gatedHTTPOrigin) arm() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.armed, o.entered, o.release = true, make(chan struct{}), make(chan struct{})
}

func (o *gatedHTTPOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/items/")
	o.mu.Lock()
	v, ok := o.value[key]
	armed, entered, release := o.armed, o.entered, o.release
	o.armed = false
	o.mu.Unlock()
	if armed {
		close(entered)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
	}
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Write([]byte(v))
}

// TestVersionlessHTTPOriginRacingAnEvent: over a real node (Kafka, Redis, an HTTP origin that
// sends no version), a load reads v1, then v2 is written and its event reaches the node and
// Redis before the answer returns. The read must serve v2, and neither tier may keep v1: a
// second node reads v2 too. A read with min_version gets Unavailable naming the reason.
func TestVersionlessHTTPOriginRacingAnEvent(t *testing.T) {
	h := newHarness(t)
	o := &gatedHTTPOrigin{value: map[string]string{"k": "v1"}}
	srv := httptest.NewServer(o)
	defer srv.Close()
	loader, closeLoader, err := OpenOrigin(srv.URL+"/items/{key}", OriginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeLoader()
	withOrigin := func(c *Config) { c.Loader = loader }
	a := h.start(withOrigin)
	ctx := ctxT(t)

	o.arm()
	type answer struct {
		r   *pb.GetResponse
		err error
	}
	done := make(chan answer, 1)
	go func() {
		r, err := a.client.Get(ctx, &pb.GetRequest{Key: "k"})
		done <- answer{r, err}
	}()
	select {
	case <-o.entered: // the load has read v1
	case <-time.After(30 * time.Second):
		t.Fatal("the read never reached the origin")
	}
	o.set("k", "v2")
	if err := h.publisher().Publish(ctx, invalidation.Event{Key: "k", Version: 2, Op: invalidation.OpInvalidate}); err != nil {
		t.Fatal(err)
	}
	tier := a.l2.(*redistier.Tier)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if st := a.l1.State("k"); st.Version < 2 {
			return fmt.Sprintf("L1 is at %+v", st)
		}
		if e, _, err := tier.Get(ctx, "k"); err != nil || e.Version < 2 {
			return fmt.Sprintf("Redis is at %+v (%v)", e, err)
		}
		return ""
	})
	close(o.release) // v1 returns, after the event
	var got answer
	select {
	case got = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the read did not finish")
	}
	if got.err != nil || string(got.r.Value) != "v2" || got.r.Version != 2 {
		t.Fatalf("Get = %v %v, want v2 at version 2 (the answer read before the write may not be served)", got.r, got.err)
	}
	if it, ok := a.l1.Get("k"); !ok || string(it.Value) != "v2" {
		t.Fatalf("L1 holds %q %v, want v2", it.Value, ok)
	}
	if e, found, _ := tier.Get(ctx, "k"); found && string(e.Value) != "v2" {
		t.Fatalf("Redis holds %q@%d", e.Value, e.Version)
	}
	b := h.start(withOrigin)
	if r := get(t, b, "k", 0); string(r.Value) != "v2" {
		t.Fatalf("a second node reads %q@%d from %s, want v2", r.Value, r.Version, r.Tier)
	}
	_, err = a.client.Get(ctx, &pb.GetRequest{Key: "other", MinVersion: 3})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "without a version") {
		t.Fatalf("Get with min_version from a versionless origin: %v, want Unavailable naming the reason", err)
	}
}
