// Package outbox is a transactional outbox for a service's own PostgreSQL database: the service
// records each change to a cached key in the same transaction as the change (Enqueue), and a
// Relay publishes the rows to Kafka as cachewire change events, deleting each row only after
// Kafka acknowledged it. A crash between the commit and the publish loses nothing: the row is
// still there, and the relay publishes it when it runs again. This replaces the dual write of
// "commit, then invalidation.Publisher.Publish", which loses the invalidation when the process
// dies in between.
//
//	if err := outbox.Apply(ctx, db); err != nil { ... }          // or outbox.Schema() in your migrations
//	tx, _ := db.BeginTx(ctx, nil)
//	var version int64
//	tx.QueryRowContext(ctx, `UPDATE users SET name = $1, version = version + 1 WHERE id = $2
//	    RETURNING version`, name, id).Scan(&version)
//	outbox.Enqueue(ctx, tx, invalidation.Event{Key: "user:" + id, Version: uint64(version),
//	    Op: invalidation.OpUpsert, Value: value, HasValue: true})
//	tx.Commit()
//
// Versions: each event needs a version that only grows per key, across deletes and re-inserts
// too. Two patterns work: a bigint version column bumped in every UPDATE (JPA's @Version; a
// DELETE then re-INSERT must continue from the deleted row's version, for example by keeping a
// tombstone row), or one sequence shared by all rows (nextval in every write), which never goes
// back. Services in other languages insert rows with plain SQL (see Schema) and run the relay as
// a process of its own.
//
// The package uses database/sql, so it works with pgx's stdlib driver ("pgx"); the relay also
// opens a pgx connection of its own, for the advisory lock and LISTEN/NOTIFY.
package outbox

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachewire/cachewire/internal/tracectx"
	"github.com/cachewire/cachewire/invalidation"
)

//go:embed schema.sql
var schemaSQL string

// Schema returns the SQL that creates the outbox table, the table of rows that could not be
// published, and the trigger that wakes the relay. It is idempotent.
func Schema() string { return schemaSQL }

// Apply runs Schema on db.
func Apply(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, schemaSQL); err != nil {
		return fmt.Errorf("outbox: apply the schema: %w", err)
	}
	return nil
}

// Execer is what Enqueue writes through: the caller's *sql.Tx (or *sql.Conn inside a
// transaction it began).
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// ErrVersionTooLarge is returned by Enqueue for a version PostgreSQL's bigint cannot hold.
var ErrVersionTooLarge = errors.New("outbox: version is larger than a bigint holds")

// Enqueue records events in the caller's transaction: they are published if, and only if, it
// commits. Each event must be valid under invalidation's default limits (a key, a version above
// zero, a known op, a value only on UPSERT), or nothing is written and the error says why.
//
// An event's trace context (its Trace traceparent, else ctx's span, when that is sampled) is
// stored in the row's traceparent column and published with the event, so that one trace
// follows the transaction to every cache node. Tables made before the column (see Schema) keep
// working: a call with trace context writes its rows under a savepoint (two more statements),
// and when the table has no traceparent column, writes them again without it (one more; run
// outbox.Apply, or the ALTER TABLE in Schema, to store trace context). Outside a transaction
// (tx a *sql.DB) rows carry no trace context.
func Enqueue(ctx context.Context, tx Execer, events ...invalidation.Event) error {
	limits := invalidation.Limits{}.WithDefaults()
	traced := false
	tps := make([]string, len(events))
	for i := range events {
		if err := limits.Validate(&events[i]); err != nil {
			return fmt.Errorf("outbox: event %d: %w", i, err)
		}
		if events[i].Version > math.MaxInt64 {
			return fmt.Errorf("%w: event %d, key %q, version %d", ErrVersionTooLarge, i, events[i].Key, events[i].Version)
		}
		tps[i] = traceparent(ctx, &events[i])
		traced = traced || tps[i] != ""
	}
	// A savepoint, so that a table without the column fails the traced inserts only. Outside
	// a transaction (autocommit) SAVEPOINT fails: the rows are then written without trace.
	if traced {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT cachewire_outbox_trace`); err != nil {
			traced = false
		}
	}
	if traced {
		err := insert(ctx, tx, events, tps)
		switch {
		case err == nil:
			if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT cachewire_outbox_trace`); err != nil {
				return fmt.Errorf("outbox: enqueue: %w", err)
			}
			return nil
		case !undefinedTraceColumn(err):
			return err
		}
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT cachewire_outbox_trace`); err != nil {
			return fmt.Errorf("outbox: enqueue: %w", err)
		}
	}
	return insert(ctx, tx, events, nil)
}

// insert writes one row per event, with tps[i] in the traceparent column when tps is not nil.
func insert(ctx context.Context, tx Execer, events []invalidation.Event, tps []string) error {
	for i := range events {
		e := &events[i]
		var value any
		if e.HasValue {
			value = e.Value
			if e.Value == nil {
				value = []byte{}
			}
		}
		var err error
		if tps != nil {
			var tp any
			if tps[i] != "" {
				tp = tps[i]
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO cachewire_outbox (key, op, version, value, traceparent) VALUES ($1, $2, $3, $4, $5)`,
				e.Key, e.Op.String(), int64(e.Version), value, tp)
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO cachewire_outbox (key, op, version, value) VALUES ($1, $2, $3, $4)`,
				e.Key, e.Op.String(), int64(e.Version), value)
		}
		if err != nil {
			return fmt.Errorf("outbox: enqueue %q: %w", e.Key, err)
		}
	}
	return nil
}

// undefinedTraceColumn reports whether err says the outbox table has no traceparent column
// (SQLSTATE 42703, undefined_column), from pgx or, by its message, from another driver.
func undefinedTraceColumn(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "42703" && strings.Contains(pg.Message, "traceparent")
	}
	msg := err.Error()
	return strings.Contains(msg, `column "traceparent"`) && strings.Contains(msg, "does not exist")
}

// traceparent is the W3C traceparent an event's row carries: the event's own, else ctx's span's
// when it is sampled (an unsampled one would start no span anywhere).
func traceparent(ctx context.Context, e *invalidation.Event) string {
	if tp := e.Trace[invalidation.HeaderTraceparent]; tp != "" {
		return tp
	}
	if !trace.SpanContextFromContext(ctx).IsSampled() {
		return ""
	}
	return tracectx.Inject(ctx, nil)[invalidation.HeaderTraceparent]
}
