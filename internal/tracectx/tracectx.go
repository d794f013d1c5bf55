// Package tracectx carries W3C trace context (traceparent, tracestate) between a context and
// the string maps of change events (Event.Trace) and record headers. It has no exporter: a
// process that records spans sets up internal/telemetry.
package tracectx

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Propagator is how cachewire carries trace context: W3C Trace Context.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Inject writes ctx's span context into carrier (traceparent, tracestate), creating the map
// when there is something to write. It returns carrier unchanged when ctx holds no valid span
// context.
func Inject(ctx context.Context, carrier map[string]string) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return carrier
	}
	if carrier == nil {
		carrier = make(map[string]string, 2)
	}
	Propagator.Inject(ctx, propagation.MapCarrier(carrier))
	return carrier
}

// Extract returns ctx carrying the remote span context in carrier, and whether carrier held a
// sampled one (the only kind worth a span: an unsampled parent would not record it).
func Extract(ctx context.Context, carrier map[string]string) (context.Context, bool) {
	if len(carrier) == 0 {
		return ctx, false
	}
	ctx = Propagator.Extract(ctx, propagation.MapCarrier(carrier))
	sc := trace.SpanContextFromContext(ctx)
	return ctx, sc.IsValid() && sc.IsSampled()
}
