package telemetry

import (
	"context"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/tracectx"
	"github.com/cachewire/cachewire/invalidation"
)

func TestSetupIsOffUnlessConfigured(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		on   bool
		err  string
	}{
		{name: "nothing set"},
		{name: "an endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, on: true},
		{name: "a traces endpoint over grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, on: true},
		{name: "exporter otlp alone", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{name: "exporter none wins", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}},
		{name: "SDK disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}},
		{name: "an unsupported exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: `OTEL_TRACES_EXPORTER="zipkin" names no exporter`},
		{name: "a list with otlp", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp,console"}, on: true},
		{name: "an unsupported protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
			err: `OTEL_EXPORTER_OTLP_PROTOCOL="http/json" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
				"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
				t.Setenv(k, tc.env[k])
			}
			tr, err := Setup(context.Background(), "svc", "id-1")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Setup = %v, want an error saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if on := tr.Provider() != nil; on != tc.on {
				t.Fatalf("tracing on = %v, want %v", on, tc.on)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = tr.Shutdown(ctx) // nothing buffered: nothing to export
		})
	}
}

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
