package testenv

import (
	"testing"
	"time"
)

// WaitFor polls cond every few milliseconds until it returns "" or timeout passes, then fails t
// with the last thing cond said. Tests use it instead of sleeping for an event to happen.
func WaitFor(t testing.TB, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v: %s", timeout, msg)
		}
		<-tick.C
	}
}
