package writer

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/retry"
)

// bury dead-letters rows: it moves them from the outbox to the outbox_dead bucket in one
// transaction, marks their versions so waiters do not take them as published, counts and logs
// them, and wakes the dead-letter loop.
func (w *Writer) bury(rows []deadRow) error {
	if len(rows) == 0 {
		return nil
	}
	if err := w.store.bury(rows); err != nil {
		return fmt.Errorf("writer: dead-letter %d outbox row(s): %w", len(rows), err)
	}
	w.mu.Lock()
	for _, r := range rows {
		if r.seq > w.startSeq { // a write of this run may be waiting for it
			w.dead[r.seq] = struct{}{}
		}
	}
	w.mu.Unlock()
	w.depth.Add(-int64(len(rows)))
	w.deadRows.Add(int64(len(rows)))
	w.deadLettered.Add(uint64(len(rows)))
	w.m.deadLettered.Add(float64(len(rows)))
	kept := "the outbox_dead bucket"
	if w.dlq != nil {
		kept = "the outbox_dead bucket until topic " + w.cfg.DeadLetterTopic + " acks it"
	}
	for _, r := range rows {
		if w.deadLog.Allow() {
			w.log.Error("outbox row cannot be published: dead-lettered so the rows behind it go on",
				"outbox_seq", r.seq, "key", r.key, "reason", r.reason, "kept_in", kept)
		}
	}
	select {
	case w.deadKick <- struct{}{}:
	default:
	}
	return nil
}

// deadLetterLoop writes the rows of the outbox_dead bucket to the dead-letter topic and deletes
// them from the bucket once Kafka acked them, retrying with capped back-off.
func (w *Writer) deadLetterLoop() {
	backoff, failures := retry.NewBackoff(time.Second, time.Minute), 0
	for {
		wait := (<-chan time.Time)(nil) // nothing to do: wait for a kick
		if w.deadRows.Load() > 0 {
			n, err := w.flushDead()
			switch {
			case err == nil && n > 0:
				backoff.Reset()
				failures = 0
				continue
			case err != nil:
				if w.ctx.Err() != nil {
					return
				}
				failures++
				d := backoff.Next()
				if failures == 1 || failures%10 == 0 {
					w.log.Warn("cannot write dead rows to the dead-letter topic; they stay in the outbox_dead bucket",
						"topic", w.cfg.DeadLetterTopic, "rows", w.deadRows.Load(), "err", err, "attempt", failures, "retry_in", d)
				}
				wait = time.After(d)
			}
		}
		select {
		case <-w.deadKick:
		case <-wait:
		case <-w.ctx.Done():
			return
		}
	}
}

// flushDead writes up to 100 dead rows to the dead-letter topic and deletes them from the bucket.
func (w *Writer) flushDead() (int, error) {
	rows, err := w.store.dead(100)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	msgs := make([]kafka.Message, len(rows))
	seqs := make([]uint64, len(rows))
	for i, r := range rows {
		seqs[i] = r.seq
		msgs[i] = kafka.Message{Value: r.raw, Headers: []kafka.Header{
			{Key: "cachewire.outbox.seq", Value: []byte(strconv.FormatUint(r.seq, 10))},
			{Key: "cachewire.error", Value: []byte(r.reason)},
			{Key: "cachewire.source.writer", Value: []byte(w.cfg.WriterID)},
			{Key: "cachewire.source.topic", Value: []byte(w.cfg.Topic)},
		}}
		if r.key != "" {
			msgs[i].Key = []byte(r.key)
		}
	}
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	if err := w.dlq.WriteMessages(ctx, msgs...); err != nil {
		return 0, err
	}
	if err := w.store.unbury(seqs); err != nil {
		return 0, err
	}
	w.deadRows.Add(-int64(len(rows)))
	w.log.Info("dead rows written to the dead-letter topic", "topic", w.cfg.DeadLetterTopic, "rows", len(rows),
		"first_outbox_seq", seqs[0])
	return len(rows), nil
}
