package checker

import (
	"testing"

	"github.com/cachewire/cachewire/internal/testenv"
)

// TestEnvNamesMatchTheTests: the checker reads the same variables as the tests, without linking
// the test helpers into cachecheck.
func TestEnvNamesMatchTheTests(t *testing.T) {
	if EnvKafka != testenv.EnvKafka || EnvRedis != testenv.EnvRedis {
		t.Fatalf("checker reads %s/%s, the tests %s/%s", EnvKafka, EnvRedis, testenv.EnvKafka, testenv.EnvRedis)
	}
}
