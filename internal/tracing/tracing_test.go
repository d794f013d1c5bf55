package tracing

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/tracectx"
	"github.com/cachewire/cachewire/invalidation"
)

// TestPublishAndApplySpans: a publish span is a child of the write's trace context and the
// event then carries the publish's context; an apply span is a child of that. Events without a
// sampled context get no span.
func TestPublishAndApplySpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := Tracer(tp)
	write, span := tr.Start(context.Background(), "Put")
	events := []invalidation.Event{
		{Key: "a", Version: 1, Op: invalidation.OpUpsert, Trace: tracectx.Inject(write, nil)},
		{Key: "b", Version: 2, Op: invalidation.OpDelete},
		{Key: "c", Version: 3, Op: invalidation.OpUpsert, Trace: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}},
	}
	StartPublish(tr, "topic", events).End(nil)
	span.End()
	StartApply(tr, "apply L1", "topic", 2, events, time.Now()).End(nil)
	ended := rec.Ended()
	if len(ended) != 3 {
		t.Fatalf("%d spans ended, want Put, one publish and one apply", len(ended))
	}
	pub, apply := ended[0], ended[2]
	if pub.Name() != "publish topic" || pub.SpanKind() != trace.SpanKindProducer || pub.Parent().SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("publish span %s (%v), parent %v, want a producer child of Put", pub.Name(), pub.SpanKind(), pub.Parent().SpanID())
	}
	if apply.Name() != "apply L1" || apply.SpanKind() != trace.SpanKindConsumer || apply.Parent().SpanID() != pub.SpanContext().SpanID() ||
		apply.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Fatalf("apply span %s, parent %v, want a consumer child of the publish in the write's trace", apply.Name(), apply.Parent().SpanID())
	}
	if events[1].Trace != nil || events[2].Trace["traceparent"] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00" {
		t.Fatalf("events without a sampled context changed: %v %v", events[1].Trace, events[2].Trace)
	}
	if Spans(nil).End(nil); StartPublish(nil, "t", events) != nil || StartApply(nil, "x", "t", 0, events, time.Now()) != nil {
		t.Fatal("a nil tracer started spans")
	}
}
