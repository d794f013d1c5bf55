package invalidation_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestDecodeTakesTraceFromHeaders: a record whose event carries no trace context (a Spring
// producer's JSON, say) takes the traceparent and tracestate headers; an event's own wins.
func TestDecodeTakesTraceFromHeaders(t *testing.T) {
	raw, err := invalidation.Encode(&invalidation.Event{Key: "k", Version: 3, Op: invalidation.OpDelete})
	if err != nil {
		t.Fatal(err)
	}
	hs := []kafka.Header{{Key: "traceparent", Value: []byte(tp)}, {Key: "tracestate", Value: []byte("vendor=1")}, {Key: "other", Value: []byte("x")}}
	e, err := invalidation.Formats{}.Decode(kafka.Message{Value: raw, Headers: hs}, invalidation.Limits{})
	if err != nil || e.Trace["traceparent"] != tp || e.Trace["tracestate"] != "vendor=1" || len(e.Trace) != 2 {
		t.Fatalf("Decode = %+v, %v; want the trace headers as its Trace", e, err)
	}
	json := kafka.Message{Key: []byte("k"), Value: []byte(`{"key":"k","version":3,"op":"DELETE"}`),
		Headers: append(hs, kafka.Header{Key: "contentType", Value: []byte("application/json")})}
	if e, err := (invalidation.Formats{}).Decode(json, invalidation.Limits{}); err != nil || e.Trace["traceparent"] != tp {
		t.Fatalf("Decode JSON = %+v, %v; want the traceparent header", e, err)
	}
	own := "00-11111111111111111111111111111111-2222222222222222-01"
	raw, _ = invalidation.Encode(&invalidation.Event{Key: "k", Version: 3, Op: invalidation.OpDelete, Trace: map[string]string{"traceparent": own}})
	if e, _ := (invalidation.Formats{}).Decode(kafka.Message{Value: raw, Headers: hs}, invalidation.Limits{}); e.Trace["traceparent"] != own || len(e.Trace) != 1 {
		t.Fatalf("Decode = %v, want the event's own trace context", e.Trace)
	}
}

// TestPublisherCarriesTraceContext: Publish writes an event's trace context into the record's
// headers, and gives an event without one the caller's span context.
func TestPublisherCarriesTraceContext(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "trace", 1)
	p, err := invalidation.NewPublisher(invalidation.PublisherConfig{Brokers: k.Brokers, Kafka: k.Conn, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var mu sync.Mutex
	got := map[string]invalidation.Event{}
	startNode(t, k, topic, invalidation.RefreshHeld, func(c *invalidation.SubscriberConfig) {
		c.Sink = invalidation.SinkFuncs{Apply: func(_ string, _ int, events []invalidation.Event) {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range events {
				got[e.Key] = e
			}
		}, ResetFunc: func(string, int, string) {}}
	})
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(testCtx(t), sc)
	own := invalidation.Event{Key: "own", Version: 1, Op: invalidation.OpDelete, Trace: map[string]string{"traceparent": tp}}
	if err := p.Publish(ctx, own, invalidation.Event{Key: "ctx", Version: 1, Op: invalidation.OpDelete}); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), invalidation.Event{Key: "none", Version: 1, Op: invalidation.OpDelete}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < 3 {
			return "waiting for 3 events"
		}
		return ""
	})
	if own.Trace["traceparent"] != tp || len(own.Trace) != 1 {
		t.Fatalf("Publish changed the caller's event: %v", own.Trace)
	}
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if got["own"].Trace["traceparent"] != tp || got["ctx"].Trace["traceparent"] != want || got["none"].Trace != nil {
		t.Fatalf("traces = own %v, ctx %v, none %v; want %s, %s, none", got["own"].Trace, got["ctx"].Trace, got["none"].Trace, tp, want)
	}
	// The headers carry it too: read the raw records.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: topic, Dialer: k.Dialer(), MaxWait: 50 * time.Millisecond})
	defer r.Close()
	for range 3 {
		m, err := r.ReadMessage(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		var h string
		for _, x := range m.Headers {
			if x.Key == "traceparent" {
				h = string(x.Value)
			}
		}
		if wantH := map[string]string{"own": tp, "ctx": want, "none": ""}[string(m.Key)]; h != wantH {
			t.Errorf("record %s: traceparent header %q, want %q", m.Key, h, wantH)
		}
	}
}
