package outbox_test

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/outbox"
)

// TestOutboxCarriesTheTransactionsTrace: a row enqueued under a traced context stores its
// traceparent; the relay publishes the event in a "publish TOPIC" span that is a child of the
// transaction's span, and the event (and its record's header) then carries the publish span's
// context. A row of an untraced context carries none. On a table made before the traceparent
// column, the relay still publishes.
func TestOutboxCarriesTheTransactionsTrace(t *testing.T) {
	p := testenv.NewPostgres(t)
	k := testenv.NewKafka(t)
	topic := k.CreateTopic(t, "outbox-trace", 1)
	db := p.Open(t)
	ctx := ctxT(t)
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tctx, txSpan := tp.Tracer("app").Start(ctx, "UPDATE users")
	tx, _ := db.BeginTx(ctx, nil)
	if err := outbox.Enqueue(tctx, tx, upsert("user:1", 1, "ada")); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Enqueue(ctx, tx, upsert("user:2", 1, "grace")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	txSpan.End()
	r := startRelay(t, p.DSN, k, topic, func(c *outbox.RelayConfig) { c.Tracer = tp })
	msgs := readMessages(t, k, topic, 2)
	events := readEvents(t, k, topic, 2)

	var publish sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "publish "+topic {
			if publish != nil {
				t.Fatal("two publish spans: the untraced row got one")
			}
			publish = s
		}
	}
	if publish == nil || publish.Parent().SpanID() != txSpan.SpanContext().SpanID() || publish.SpanKind() != trace.SpanKindProducer {
		t.Fatalf("publish span %v, want a producer child of the transaction's span", publish)
	}
	want := "00-" + publish.SpanContext().TraceID().String() + "-" + publish.SpanContext().SpanID().String() + "-01"
	if events[0].Trace["traceparent"] != want || events[1].Trace != nil {
		t.Fatalf("traces %v and %v, want the publish span's %s and none", events[0].Trace, events[1].Trace, want)
	}
	if len(msgs[0].Headers) != 1 || msgs[0].Headers[0].Key != "traceparent" || string(msgs[0].Headers[0].Value) != want || len(msgs[1].Headers) != 0 {
		t.Fatalf("headers %v and %v, want traceparent %s on the first only", msgs[0].Headers, msgs[1].Headers, want)
	}

	// A table without the column (made before it): the relay publishes all the same.
	r.Close()
	if _, err := db.ExecContext(ctx, `ALTER TABLE cachewire_outbox DROP COLUMN traceparent`); err != nil {
		t.Fatal(err)
	}
	topic2 := k.CreateTopic(t, "outbox-trace-old", 1)
	tx, _ = db.BeginTx(ctx, nil)
	if err := outbox.Enqueue(ctx, tx, upsert("user:3", 1, "hopper")); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	// A traced transaction too: its row is written without the column, in the same transaction.
	tctx, span := tp.Tracer("app").Start(ctx, "UPDATE users")
	tx, _ = db.BeginTx(ctx, nil)
	if err := outbox.Enqueue(tctx, tx, upsert("user:4", 1, "lovelace")); err != nil {
		t.Fatalf("traced Enqueue on a table without the column: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// And outside a transaction (autocommit), where there is no savepoint.
	if err := outbox.Enqueue(tctx, db, upsert("user:5", 1, "liskov")); err != nil {
		t.Fatalf("traced Enqueue outside a transaction: %v", err)
	}
	span.End()
	startRelay(t, p.DSN, k, topic2)
	got := readEvents(t, k, topic2, 3)
	for i, key := range []string{"user:3", "user:4", "user:5"} {
		if got[i].Key != key || got[i].Trace != nil {
			t.Fatalf("event %d = %+v from a table without the column, want %s without trace", i, got[i], key)
		}
	}
}
