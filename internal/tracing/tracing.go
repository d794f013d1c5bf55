// Package tracing records cachewire's spans, given a tracer provider: the publish and apply
// spans of change events, and the gRPC server and client options that trace calls with W3C
// trace context. It exports nothing itself (internal/telemetry sets up the exporter in the
// binaries), so that importing it registers no exporter, codec or compressor.
package tracing

import (
	"context"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/cachewire/cachewire/internal/tracectx"
	"github.com/cachewire/cachewire/invalidation"
)

// untraced are the calls that get no span: health probes, and Watch streams (one span a
// stream's lifetime long says nothing).
var untraced = filters.Any(filters.HealthCheck(), filters.MethodName("Watch"))

// ServerOption is the gRPC server option that traces the calls a server receives, continuing
// the trace context its callers send. tp must not be nil.
func ServerOption(tp trace.TracerProvider) grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(tracectx.Propagator),
		otelgrpc.WithFilter(filters.Not(untraced))))
}

// DialOption is the gRPC dial option that traces the calls a client makes and sends their
// trace context to the server. tp must not be nil.
func DialOption(tp trace.TracerProvider) grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(tracectx.Propagator),
		otelgrpc.WithFilter(filters.Not(untraced))))
}

// Spans are spans started for a batch of events, ended together.
type Spans []trace.Span

// End ends every span, recording err (the batch failed) on each.
func (s Spans) End(err error) {
	for _, sp := range s {
		if err != nil {
			sp.RecordError(err)
			sp.SetStatus(codes.Error, err.Error())
		}
		sp.End()
	}
}

// eventAttrs are the attributes of an event's span.
func eventAttrs(topic string, e *invalidation.Event, extra []attribute.KeyValue) []attribute.KeyValue {
	attrs := []attribute.KeyValue{attribute.String("messaging.system", "kafka"), attribute.String("messaging.kafka.message.key", e.Key),
		attribute.Int64("cachewire.version", int64(e.Version)), attribute.String("cachewire.op", e.Op.String())}
	if topic != "" {
		attrs = append(attrs, attribute.String("messaging.destination.name", topic))
	}
	return append(attrs, extra...)
}

// StartPublish starts a PRODUCER span "publish TOPIC" for each event that carries a sampled
// trace context (the write's), as its child, and points the event's Trace at the new span, so
// that the consumers' spans are children of the publish. Events without one get no span. tr
// nil starts nothing.
func StartPublish(tr trace.Tracer, topic string, events []invalidation.Event, attrs ...attribute.KeyValue) Spans {
	if tr == nil {
		return nil
	}
	var spans Spans
	for i := range events {
		e := &events[i]
		parent, ok := tracectx.Extract(context.Background(), e.Trace)
		if !ok {
			continue
		}
		ctx, sp := tr.Start(parent, "publish "+topic, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(eventAttrs(topic, e, append(attrs, attribute.String("messaging.operation.type", "publish")))...))
		e.Trace = tracectx.Inject(ctx, nil)
		spans = append(spans, sp)
	}
	return spans
}

// StartApply starts a CONSUMER span name ("apply L1") for each event of one partition's batch
// that carries a sampled trace context, as its child: the span of the event's publish, so one
// trace holds the write, its publish and every node's apply. start is when the batch arrived.
// topic "" and partition -1 say that they are not known (a batch of several partitions). tr nil
// starts nothing.
func StartApply(tr trace.Tracer, name, topic string, partition int, events []invalidation.Event, start time.Time, attrs ...attribute.KeyValue) Spans {
	if tr == nil {
		return nil
	}
	var spans Spans
	for i := range events {
		e := &events[i]
		parent, ok := tracectx.Extract(context.Background(), e.Trace)
		if !ok {
			continue
		}
		extra := append(attrs, attribute.String("messaging.operation.type", "process"), attribute.Int64("messaging.kafka.offset", e.Offset))
		if partition >= 0 {
			extra = append(extra, attribute.Int("messaging.destination.partition.id", partition))
		}
		_, sp := tr.Start(parent, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(start),
			trace.WithAttributes(eventAttrs(topic, e, extra)...))
		spans = append(spans, sp)
	}
	return spans
}

// Tracer is tp's tracer for cachewire's spans, or nil when tp is nil.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer("github.com/cachewire/cachewire")
}
