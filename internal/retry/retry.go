// Package retry holds the pieces every retry loop in cachewire shares: capped exponential
// back-off with jitter, a sleep that ends with its context, and a limiter that keeps a loop that
// keeps failing from flooding the log.
//
//	b := retry.NewBackoff(100*time.Millisecond, 5*time.Second)
//	for ctx.Err() == nil {
//		if err := try(); err == nil {
//			b.Reset()
//			continue
//		}
//		if !retry.Sleep(ctx, b.Next()) {
//			return
//		}
//	}
package retry

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff is capped exponential back-off with jitter: each Next doubles the step (from Min up to
// Max) and returns a random duration between half of it and all of it. It is not safe for
// concurrent use: each loop owns one.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// NewBackoff returns a Backoff from min up to max.
func NewBackoff(min, max time.Duration) *Backoff { return &Backoff{Min: min, Max: max} }

// Next returns how long to wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(2*b.cur, b.Max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

// Step returns the current step without jitter (0 before the first Next), for logs.
func (b *Backoff) Step() time.Duration { return b.cur }

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits d or until ctx ends, and reports whether ctx is still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// LogLimiter allows N log lines per period, so that a flood of bad input or a loop that keeps
// failing cannot flood the log. It is safe for concurrent use.
type LogLimiter struct {
	mu     sync.Mutex
	n      int
	period time.Duration
	start  time.Time
	used   int
}

// NewLogLimiter allows n lines per period.
func NewLogLimiter(n int, period time.Duration) *LogLimiter {
	return &LogLimiter{n: n, period: period}
}

// Allow reports whether one more line may be logged now.
func (l *LogLimiter) Allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.start) > l.period {
		l.start, l.used = now, 0
	}
	l.used++
	return l.used <= l.n
}
