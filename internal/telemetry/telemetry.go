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

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/retry"
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
