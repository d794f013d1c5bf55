package checker

import (
	"testing"

	"github.com/cachewire/cachewire/internal/testenv"
)

// TestEnvNamesMatchTheTests: the checker reads the same variables as the tests, without linking
// the test helpers into cachecheck.
func TestEnvNamesMatchTheTests(t *testing.T) {
	for _, p := range [][2]string{{EnvKafka, testenv.EnvKafka}, {EnvRedis, testenv.EnvRedis},
		{EnvKafkaTLSCA, testenv.EnvKafkaTLSCA}, {EnvKafkaSASLMechanism, testenv.EnvKafkaSASLMechanism},
		{EnvKafkaSASLUsername, testenv.EnvKafkaSASLUsername}, {EnvKafkaSASLPassword, testenv.EnvKafkaSASLPassword},
		{EnvRedisTLSCA, testenv.EnvRedisTLSCA}, {EnvRedisUsername, testenv.EnvRedisUsername},
		{EnvRedisPassword, testenv.EnvRedisPassword}} {
		if p[0] != p[1] {
			t.Errorf("checker reads %s, the tests %s", p[0], p[1])
		}
	}
}
