// Package testenv gives every test that needs Kafka or Redis its own isolated environment.
//
// By default each call starts an in-process server for the calling test and stops it when the test
// ends: Kafka is a franz-go kfake cluster and Redis is miniredis, so the suite needs nothing but Go.
//
// When CACHEWIRE_TEST_KAFKA names bootstrap addresses (comma separated) or CACHEWIRE_TEST_REDIS
// names a redis-server address, the same calls use that real server instead, and isolate tests
// from each other by name: every topic a test creates has a unique name, and every Redis key it
// writes is under a unique prefix. scripts/kafka.sh and scripts/redis.sh start such servers;
// .ci/run runs the integration suite against them.
//
// The real servers may be secured: CACHEWIRE_TEST_KAFKA_TLS_CA and CACHEWIRE_TEST_KAFKA_SASL_*
// make Kafka.Conn connect over SASL_SSL (pass it to every Kafka client a test builds, and
// Kafka.Flags to every binary), and CACHEWIRE_TEST_REDIS_TLS_CA, _USERNAME and _PASSWORD fill
// Redis.TLS, Username and Password for every tier (Redis.Flags for cachenode). .ci/run sets them
// all from internal/testenv/secureenv.
//
// NewSecureKafka starts a broker of its own with only a SASL_SSL listener, SCRAM users made at
// format time and ACLs enforced, when CACHEWIRE_TEST_KAFKA_CLASSPATH names the broker's jars
// (scripts/kafka.sh classpath); otherwise the test skips.
//
// Usage:
//
//	func TestX(t *testing.T) {
//		k := testenv.NewKafka(t)
//		topic := k.CreateTopic(t, "events", 3)
//		r := testenv.NewRedis(t)
//		rdb := r.Client(t)
//		_ = rdb.Set(ctx, r.Key("k"), "v", 0)
//		...
//	}
package testenv
