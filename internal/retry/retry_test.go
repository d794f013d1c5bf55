package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoffGrowsToItsCapWithJitter(t *testing.T) {
	b := NewBackoff(10*time.Millisecond, 80*time.Millisecond)
	for i, step := range []time.Duration{10, 20, 40, 80, 80} {
		step *= time.Millisecond
		if d := b.Next(); d < step/2 || d > step {
			t.Fatalf("attempt %d: %v, want within [%v, %v]", i+1, d, step/2, step)
		}
	}
	b.Reset()
	if d := b.Next(); d > 10*time.Millisecond {
		t.Fatalf("after Reset: %v, want at most the minimum", d)
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep on an ended context reported it live")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep on a live context reported it ended")
	}
}

func TestLogLimiterAllowsNPerPeriod(t *testing.T) {
	l := NewLogLimiter(2, time.Hour)
	var got []bool
	for range 3 {
		got = append(got, l.Allow())
	}
	if !got[0] || !got[1] || got[2] {
		t.Fatalf("Allow x3 = %v, want exactly 2 lines allowed in the period", got)
	}
}
