package invalidation

// The subscriber reads each partition on a goroutine of its own (runPartition): it positions,
// fetches, decodes, applies and reports its freshness, and repairs what it can.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/retry"
)

// runPartition owns one partition until ctx ends.
func (s *Subscriber) runPartition(ctx context.Context, tp topicPartition, start int64, positioned func()) {
	log := s.log.With("topic", tp.topic, "partition", tp.partition)
	var conn *kafka.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	offset := start // kafka.LastOffset / FirstOffset until resolved
	backoff := retry.NewBackoff(50*time.Millisecond, 5*time.Second)
	var events []Event
	var once sync.Once
	var pendingReset error // a gap found before the log end could be resolved
	failures := 0
	for ctx.Err() == nil {
		if conn == nil {
			c, err := s.dial(ctx, tp)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				if failures == 1 || failures%20 == 0 {
					log.Warn("cannot reach partition leader; retrying", "err", err, "attempts", failures)
				}
				s.failed(tp, "cannot reach the partition leader", err)
				retry.Sleep(ctx, backoff.Next())
				continue
			}
			if failures > 0 {
				log.Info("reconnected to partition leader", "after_attempts", failures)
				s.reconnects.Add(1)
			}
			conn = c
		}
		if offset < 0 {
			resolveStart := time.Now()
			off, err := resolveOffset(conn, offset)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				if failures == 1 || failures%20 == 0 {
					log.Warn("cannot resolve the starting offset; reconnecting", "resolving", offsetName(offset),
						"err", err, "attempts", failures)
				}
				s.failed(tp, "cannot resolve the starting offset", err)
				conn.Close()
				conn = nil
				retry.Sleep(ctx, backoff.Next())
				continue
			}
			if pendingReset != nil {
				s.reset(tp, log, pendingReset)
				pendingReset = nil
			}
			atEnd := offset == kafka.LastOffset
			offset = off
			s.update(tp, func(st *PartitionState) {
				st.Positioned, st.Offset = true, off
				if atEnd {
					// Starting at the log end (with an empty sink) is being caught up as of now.
					st.CaughtUpAt, st.HighWatermark = resolveStart, off
				}
			})
			once.Do(positioned)
		}

		if _, err := conn.Seek(offset, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
			conn.Close()
			conn = nil
			continue
		}
		fetchStart := time.Now()
		_ = conn.SetReadDeadline(fetchStart.Add(s.cfg.MaxWait + 10*time.Second))
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: s.cfg.MaxBytes, MaxWait: s.cfg.MaxWait})
		events = events[:0]
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			m.Topic = tp.topic
			e, err := s.cfg.Formats.Decode(m, s.cfg.Limits)
			if errors.Is(err, ErrTombstone) {
				continue // a Debezium tombstone: nothing to apply
			}
			if err != nil {
				s.bad(ctx, log, m, err)
				continue
			}
			e.Offset = m.Offset
			events = append(events, e)
		}
		hwm := batch.HighWaterMark()
		next := batch.Offset() // past compacted records too
		err := batch.Close()
		if len(events) > 0 {
			s.cfg.Sink.ApplyEvents(tp.topic, tp.partition, events)
			s.events.Add(uint64(len(events)))
		}
		if next > offset {
			offset = next
		}
		// kafka-go reports a fetch that found nothing new (the offset is the log end) as
		// RequestTimedOut on an empty batch: that is a successful, caught-up fetch.
		emptyFetch := errors.Is(err, kafka.RequestTimedOut) && hwm == offset
		switch {
		case err == nil || errors.Is(err, io.EOF) || emptyFetch:
			failures = 0
			backoff.Reset()
			s.update(tp, func(st *PartitionState) {
				st.Offset, st.HighWatermark = offset, hwm
				st.LastError, st.LastErrorAt = "", time.Time{}
				if offset >= hwm {
					st.CaughtUpAt = fetchStart
				}
			})
		case errors.Is(err, kafka.OffsetOutOfRange), errors.Is(err, kafka.UnknownTopicOrPartition):
			// Events were lost to us: retention passed our offset, or the topic was deleted or
			// recreated. Find the log end first, then reset the sink, so that every event
			// published after the reset is still read.
			resolveStart := time.Now()
			off, rerr := resolveOffset(conn, kafka.LastOffset)
			if rerr != nil {
				log.Warn("gap found but log end unknown; retrying", "err", err, "lookup_err", rerr)
				conn.Close()
				conn = nil
				offset, pendingReset = kafka.LastOffset, err
				retry.Sleep(ctx, backoff.Next())
				continue
			}
			s.reset(tp, log, err)
			offset = off
			s.update(tp, func(st *PartitionState) { st.Offset, st.HighWatermark, st.CaughtUpAt = off, off, resolveStart })
		default:
			if ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 || failures%20 == 0 {
				log.Warn("fetch failed; reconnecting", "err", err, "offset", offset, "attempts", failures)
			}
			s.failed(tp, "fetch failed", err)
			conn.Close()
			conn = nil
			retry.Sleep(ctx, backoff.Next())
		}
	}
}

// failed records a failure to read tp, for PartitionState.LastError.
func (s *Subscriber) failed(tp topicPartition, what string, err error) {
	msg := what + ": " + err.Error()
	now := time.Now()
	s.update(tp, func(st *PartitionState) { st.LastError, st.LastErrorAt = msg, now })
}

func (s *Subscriber) dial(ctx context.Context, tp topicPartition) (*kafka.Conn, error) {
	var err error
	for _, b := range shuffled(s.cfg.Brokers) {
		var c *kafka.Conn
		if c, err = s.dialer.DialLeader(ctx, "tcp", b, tp.topic, tp.partition); err == nil {
			return c, nil
		}
	}
	return nil, err
}

func resolveOffset(conn *kafka.Conn, which int64) (int64, error) {
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if which == kafka.FirstOffset {
		return conn.ReadFirstOffset()
	}
	return conn.ReadLastOffset()
}

// offsetName names the offset resolveOffset is asked for, for logs.
func offsetName(which int64) string {
	switch which {
	case kafka.FirstOffset:
		return "first offset"
	case kafka.LastOffset:
		return "log end"
	}
	return fmt.Sprint(which)
}

func (s *Subscriber) reset(tp topicPartition, log *slog.Logger, cause error) {
	reason := cause.Error()
	log.Warn("gap in the event stream: resetting the cache and continuing at the log end", "reason", reason)
	s.cfg.Sink.Reset(tp.topic, tp.partition, reason)
	s.resets.Add(1) // only once the sink was reset: whoever sees the count may rely on it
}

func (s *Subscriber) bad(ctx context.Context, log *slog.Logger, m kafka.Message, err error) {
	s.invalid.Add(1)
	if s.cfg.OnInvalid != nil {
		s.cfg.OnInvalid(m.Topic, m.Partition, m.Offset, err)
	}
	if s.badLog.Allow() {
		log.Warn("skipping invalid event", "offset", m.Offset, "err", err)
	}
	if s.dlq != nil {
		if derr := deadLetter(ctx, s.dlq, m, err); derr != nil {
			log.Error("cannot write invalid event to the dead-letter topic", "offset", m.Offset, "err", derr)
		} else {
			s.deadLettered.Add(1)
		}
	}
}

func shuffled(in []string) []string {
	out := append([]string(nil), in...)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
