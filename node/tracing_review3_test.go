package node

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// TestTracedSharedLoadsEndEverySpan_review3: with tracing on, concurrent misses of one key share
// a load (and some give up before it ends); every answer is what it would be untraced, and every
// span started is ended, under -race.
func TestTracedSharedLoadsEndEverySpan_review3(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h := newHarness(t)
	n := h.start(func(c *Config) { c.Tracer = tp })
	const key = "review3:traced"
	h.origin.put(key, 4, "v4")
	h.origin.mu.Lock()
	h.origin.hold, h.origin.started = make(chan struct{}), make(chan struct{}, 64)
	h.origin.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			if i%4 == 3 { // some give up while the load runs
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				n.client.Get(ctx, &pb.GetRequest{Key: key})
				return
			}
			r, err := n.client.Get(ctx, &pb.GetRequest{Key: key})
			if err != nil {
				errs <- err
				return
			}
			if r.GetVersion() != 4 || string(r.GetValue()) != "v4" {
				errs <- fmt.Errorf("got %v", r)
			}
		}()
	}
	<-h.origin.started
	testenv.WaitFor(t, 10*time.Second, func() string { // the others join the load
		if j := n.flight.joined.Load(); j < 7 {
			return fmt.Sprintf("%d joined", j)
		}
		return ""
	})
	h.origin.mu.Lock()
	close(h.origin.hold)
	h.origin.hold = nil
	h.origin.mu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := h.publisher().Publish(context.Background(), invalidation.Event{Key: key, Version: 5, Op: invalidation.OpDelete,
		Trace: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		names := map[string]int{}
		for _, s := range rec.Ended() {
			names[s.Name()]++
		}
		if names["apply L1"] < 1 || names["apply L2"] < 1 {
			return fmt.Sprintf("ended %v", names)
		}
		if len(rec.Started()) != len(rec.Ended()) {
			return fmt.Sprintf("%d spans started, %d ended", len(rec.Started()), len(rec.Ended()))
		}
		return ""
	})
	for _, s := range rec.Ended() {
		if s.Name() == "load" && s.Parent().IsValid() == false {
			t.Errorf("a load span without the request's span as parent")
		}
	}
}
