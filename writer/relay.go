package writer

import (
	"context"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"

	"github.com/cachewire/cachewire/internal/retry"
	"github.com/cachewire/cachewire/internal/tracing"
	"github.com/cachewire/cachewire/invalidation"
)

func (w *Writer) eventValueMax() int {
	if w.cfg.EventValueMax < 0 {
		return -1
	}
	return w.cfg.EventValueMax
}

// relayLoop publishes the outbox in commit order, in batches, and deletes rows only after
// Kafka acked them. Failures are retried with capped back-off; a restart resumes from the
// oldest row left. A row that can never be published is dead-lettered instead, so that it
// does not hold up the rows behind it.
func (w *Writer) relayLoop() {
	backoff, failures := retry.NewBackoff(100*time.Millisecond, 5*time.Second), 0
	for {
		n, err := w.relayOnce()
		if err == nil && n == 0 {
			select {
			case <-w.kick:
				continue
			case <-time.After(time.Second):
				continue
			case <-w.ctx.Done():
				return
			}
		}
		if err == nil {
			if failures > 0 {
				w.log.Info("Kafka is back: publishing the outbox", "after_failures", failures, "outbox_depth", w.depth.Load())
			}
			backoff.Reset()
			failures = 0
			continue
		}
		if w.ctx.Err() != nil {
			return
		}
		failures++
		w.m.publishErrors.Inc()
		wait := backoff.Next()
		if failures == 1 || failures%10 == 0 {
			w.log.Warn("cannot publish the outbox; writes stay durable and will be published later",
				"err", err, "outbox_depth", w.depth.Load(), "attempt", failures, "retry_in", wait)
		}
		if !retry.Sleep(w.ctx, wait) {
			return
		}
	}
}

// relayOnce handles the oldest outbox rows, up to RelayBatch: it dead-letters those that cannot
// be published and publishes the others, in order. It returns how many rows left the outbox.
func (w *Writer) relayOnce() (int, error) {
	rows, err := w.store.pending(w.cfg.RelayBatch)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	start := time.Now()
	var good []outboxRow
	var events []invalidation.Event
	var bad []deadRow
	for _, r := range rows {
		e, downgraded, err := prepare(r.raw, w.limits)
		if err != nil {
			bad = append(bad, deadRow{outboxRow: r, key: rowKey(r.raw), reason: err.Error()})
			continue
		}
		if downgraded {
			w.log.Info("outbox row carries a value larger than the event value max: publishing it as INVALIDATE",
				"outbox_seq", r.seq, "key", e.Key)
		}
		good, events = append(good, r), append(events, e)
	}
	// Dead rows go first: once a later version is published, waiters take every earlier one
	// as published unless it is marked dead.
	if err := w.bury(bad); err != nil {
		return 0, err
	}
	if len(good) == 0 {
		w.advance(rows[len(rows)-1].seq)
		return len(bad), nil
	}
	spans := tracing.StartPublish(w.tracer, w.cfg.Topic, events, attribute.String("cachewire.writer_id", w.cfg.WriterID))
	err = w.publish(events)
	spans.End(err)
	if rejected(err) {
		// Kafka refused records for what they are (too large): retrying the batch can never
		// succeed. Find the rows it refuses, one at a time.
		n, err := w.publishEach(good, events)
		return len(bad) + n, err
	}
	if err != nil {
		return len(bad), err
	}
	// Kafka has the events: release the waiters now. Deleting the rows is only bookkeeping; if
	// a crash loses the delete, the rows are published again, which consumers ignore by version.
	w.advance(rows[len(rows)-1].seq)
	if err := w.acked(good, events); err != nil {
		return len(bad), err
	}
	w.m.relayBatch.Observe(time.Since(start).Seconds())
	return len(bad) + len(good), nil
}

// publishEach publishes rows one at a time, in order, after Kafka refused a batch of them. A row
// refused on its own is published as INVALIDATE if it carries a value, and dead-lettered if it
// is refused even so. It returns how many rows left the outbox.
func (w *Writer) publishEach(rows []outboxRow, events []invalidation.Event) (int, error) {
	done := 0
	for i, r := range rows {
		e := events[i]
		err := w.publish([]invalidation.Event{e})
		if rejected(err) && e.HasValue {
			w.log.Warn("Kafka refused an outbox row: publishing it as INVALIDATE", "outbox_seq", r.seq, "key", e.Key, "err", err)
			e = asInvalidate(e)
			err = w.publish([]invalidation.Event{e})
		}
		if rejected(err) {
			if err := w.bury([]deadRow{{outboxRow: r, key: e.Key, reason: "refused by Kafka: " + err.Error()}}); err != nil {
				return done, err
			}
			w.advance(r.seq)
			done++
			continue
		}
		if err != nil {
			return done, err
		}
		w.advance(r.seq)
		if err := w.acked([]outboxRow{r}, []invalidation.Event{e}); err != nil {
			return done, err
		}
		done++
	}
	return done, nil
}

// publish sends events to the topic and waits for Kafka's ack, bounded.
func (w *Writer) publish(events []invalidation.Event) error {
	ctx, cancel := context.WithTimeout(w.ctx, 15*time.Second)
	defer cancel()
	return w.pub.Publish(ctx, events...)
}

// acked deletes published rows from the outbox and counts them.
func (w *Writer) acked(rows []outboxRow, events []invalidation.Event) error {
	seqs := make([]uint64, len(rows))
	for i, r := range rows {
		seqs[i] = r.seq
	}
	if err := w.store.ack(seqs); err != nil {
		return err
	}
	w.depth.Add(-int64(len(rows)))
	w.m.published.Add(float64(len(rows)))
	for _, e := range events {
		w.m.publishLatency.Observe(time.Since(e.CommittedAt).Seconds())
	}
	return nil
}

// rejected reports whether err says that Kafka (or the publisher's own checks) refused records
// for what they are, so that sending them again unchanged can never succeed.
func rejected(err error) bool {
	var tooLarge kafka.MessageTooLargeError
	var each kafka.WriteErrors
	switch {
	case err == nil:
		return false
	case errors.As(err, &tooLarge), errors.Is(err, kafka.MessageSizeTooLarge), errors.Is(err, kafka.InvalidRecord),
		errors.Is(err, invalidation.ErrInvalidEvent):
		return true
	case errors.As(err, &each):
		for _, e := range each {
			if rejected(e) {
				return true
			}
		}
	}
	return false
}

func (w *Writer) advance(v uint64) {
	w.mu.Lock()
	if v > w.published {
		w.published = v
		close(w.advanced)
		w.advanced = make(chan struct{})
	}
	w.mu.Unlock()
}

// isPublished reports whether version v was acked by Kafka (a dead-lettered one never is).
func (w *Writer) isPublished(v uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, dead := w.dead[v]
	return w.published >= v && !dead
}

// waitPublished waits until version v is acked by Kafka, ctx ends, or WaitTimeout passes, and
// reports whether it was acked. A dead-lettered version is never acked.
func (w *Writer) waitPublished(ctx context.Context, v uint64) bool {
	timer := time.NewTimer(w.cfg.WaitTimeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		_, dead := w.dead[v]
		done, ch := w.published >= v, w.advanced
		w.mu.Unlock()
		if dead {
			return false
		}
		if done {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			w.m.waitTimeouts.Inc()
			return false
		case <-ctx.Done():
			return false
		case <-w.ctx.Done():
			return false
		}
	}
}
