package outbox_test

import (
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/outbox"
)

// TestEnqueueTracedOnTableWithoutTraceColumn_review3: a deployment whose cachewire_outbox was
// made before the traceparent column (and not migrated) must keep working when the
// application's context is traced (any OTel-instrumented service): Enqueue must not fail the
// caller's transaction. The relay copes with such a table; Enqueue must too.
func TestEnqueueTracedOnTableWithoutTraceColumn_review3(t *testing.T) {
	p := testenv.NewPostgres(t)
	db := p.Open(t)
	ctx := ctxT(t)
	if err := outbox.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	// The table as it was before this change.
	if _, err := db.ExecContext(ctx, `ALTER TABLE cachewire_outbox DROP COLUMN traceparent`); err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	tctx := trace.ContextWithSpanContext(ctx, sc)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := outbox.Enqueue(tctx, tx, upsert("user:1", 1, "ada")); err != nil {
		t.Fatalf("Enqueue under a traced context on a table without the traceparent column: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
}
