// Package integration holds end-to-end tests of cachewire over real processes and servers.
//
// They run in the README's test command against in-process Kafka (kfake) and Redis (miniredis),
// and in .ci/run against a real Apache Kafka broker and redis-server named by
// CACHEWIRE_TEST_KAFKA and CACHEWIRE_TEST_REDIS (see internal/testenv).
package integration
