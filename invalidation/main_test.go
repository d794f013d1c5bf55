package invalidation_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a Subscriber, GroupApplier or Publisher starts must be gone after Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
