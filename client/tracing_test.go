package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/embedded"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/writer"
)

// TestWithTracingLinksTheApplicationToTheServers: with WithTracing, an application's Put is the
// parent of the writer's span, and the nodes' apply spans of its event are in the same trace; an
// application's Get is the parent of the node's span.
func TestWithTracingLinksTheApplicationToTheServers(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c, err := embedded.Start(embedded.Config{Nodes: 2,
		Node:   func(_ int, nc *node.Config) { nc.Tracer = tp },
		Writer: func(wc *writer.Config) { wc.Tracer = tp }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := client.NewWriter(c.WriterAddr, client.WithTracing(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cache, err := client.NewCache(c.NodeAddrs[0], client.WithTracing(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	ctx, app := tp.Tracer("app").Start(context.Background(), "signup")
	res, err := w.Put(ctx, "traced:1", []byte("Ada"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Get(ctx, "traced:1", client.MinVersion(res.Version)); err != nil {
		t.Fatal(err)
	}
	app.End()
	trace := app.SpanContext().TraceID()
	testenv.WaitFor(t, 20*time.Second, func() string {
		names := map[string]int{}
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() == trace {
				names[s.Name()]++
			}
		}
		if names["cachewire.v1.WriterService/Put"] != 2 || names["cachewire.v1.CacheService/Get"] != 2 || names["apply L1"] != 2 {
			// Client and server span of each call; one apply L1 per node.
			return fmt.Sprintf("spans of the trace: %v", names)
		}
		return ""
	})
}
