// Package telemetry sets up OpenTelemetry tracing for cachewire's processes from the standard
// OTEL_* environment variables, and carries trace context through change events.
//
// Tracing is off unless the environment asks for it: OTEL_TRACES_EXPORTER=otlp, or an OTLP
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Then spans go to
// that endpoint over OTLP, http/protobuf by default or grpc (OTEL_EXPORTER_OTLP_PROTOCOL,
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL); the exporter reads its other variables itself
// (headers, timeout, TLS, compression), the SDK reads the sampler (OTEL_TRACES_SAMPLER, default
// parentbased_always_on) and the batch processor's (OTEL_BSP_*), and OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES name the process. OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
// keeps it off.
//
// Trace context travels as W3C Trace Context (traceparent, tracestate): in gRPC metadata, in
// ChangeEvent.trace and in Kafka record headers.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/cachewire/cachewire/internal/retry"
	"github.com/cachewire/cachewire/internal/tracectx"
	"github.com/cachewire/cachewire/invalidation"
)

// Tracing is a process's tracer provider, or nothing when tracing is off.
type Tracing struct {
	tp *sdktrace.TracerProvider
	// Description says where spans go ("OTLP http/protobuf to http://..."), for the start log.
	Description string
}

// Setup reads the OTEL_* environment (see the package doc) and returns the process's tracing:
// off (Provider returns nil) unless configured. service is the default service.name
// (OTEL_SERVICE_NAME overrides it), instance the service.instance.id (a node or writer id; may
// be empty). A setting it cannot honour is an error, not silently ignored.
func Setup(ctx context.Context, service, instance string) (*Tracing, error) {
	env := func(k string) string { return strings.TrimSpace(os.Getenv(k)) }
	if strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") {
		return &Tracing{}, nil
	}
	exporter := strings.ToLower(env("OTEL_TRACES_EXPORTER"))
	endpoint := env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	// OTEL_TRACES_EXPORTER is a list (a pod's environment may be shared with, say, a Java agent
	// that also logs to the console): otlp in it is what this process does; it exports nothing
	// else.
	var otlp, other []string
	for _, e := range strings.Split(exporter, ",") {
		switch e = strings.TrimSpace(e); e {
		case "":
		case "otlp":
			otlp = append(otlp, e)
		default:
			other = append(other, e)
		}
	}
	switch {
	case exporter == "none", exporter == "" && endpoint == "":
		return &Tracing{}, nil
	case exporter != "" && len(otlp) == 0:
		return nil, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%q names no exporter cachewire has: use otlp (or none)", exporter)
	}
	protocol := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = env("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if protocol == "" {
		protocol = "http/protobuf"
	}
	var exp sdktrace.SpanExporter
	var err error
	switch protocol {
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("telemetry: OTEL_EXPORTER_OTLP_PROTOCOL=%q is not supported: use http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", service)}
	if instance != "" {
		attrs = append(attrs, attribute.String("service.instance.id", instance))
	}
	// The environment's attributes come last, so that they win.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	if endpoint == "" {
		endpoint = "the exporter's default endpoint"
	}
	desc := "OTLP " + protocol + " to " + endpoint
	if len(other) > 0 {
		desc += " (OTEL_TRACES_EXPORTER also names " + strings.Join(other, ", ") + ": not supported here, ignored)"
	}
	return &Tracing{tp: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), Description: desc}, nil
}

// Provider is the tracer provider, or nil when tracing is off (the Config fields that take it
// read nil as "no spans").
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil || t.tp == nil {
		return nil
	}
	return t.tp
}

// Log says whether tracing is on and where spans go, and sends OpenTelemetry's own errors (an
// export that failed: the collector is down) to log, at most a few a minute, instead of the
// standard logger's stderr lines.
func (t *Tracing) Log(log *slog.Logger) {
	if t.Provider() == nil {
		log.Debug("tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER=otlp)")
		return
	}
	sampler := os.Getenv("OTEL_TRACES_SAMPLER")
	if sampler == "" {
		sampler = "parentbased_always_on (the default)"
	}
	log.Info("tracing on", "export", t.Description, "sampler", sampler)
	limit := retry.NewLogLimiter(3, time.Minute)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		if limit.Allow() {
			log.Warn("tracing: OpenTelemetry error (spans may be lost)", "err", err)
		}
	}))
}

// Shutdown exports the spans still buffered and stops the provider; a no-op when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.tp == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

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
