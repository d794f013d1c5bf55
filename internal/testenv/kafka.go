package testenv

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/twmb/franz-go/pkg/kfake"
)

// EnvKafka names real Kafka bootstrap addresses (comma separated) for the tests to use.
const EnvKafka = "CACHEWIRE_TEST_KAFKA"

// EnvKafkaVersion, when set alongside EnvKafka, is the broker's version as its start script read
// it from the broker log. It is only reported, never relied on.
const EnvKafkaVersion = "CACHEWIRE_TEST_KAFKA_VERSION"

// The variables that secure the connection to the real broker of EnvKafka: the CA its certificate
// is checked against (TLS is on when it is set), and the SASL mechanism (PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512), user and password. .ci/run sets them from internal/testenv/secureenv, so the
// real-mode suite reaches Kafka over SASL_SSL as a user whose ACLs the broker enforces.
const (
	EnvKafkaTLSCA         = "CACHEWIRE_TEST_KAFKA_TLS_CA"
	EnvKafkaSASLMechanism = "CACHEWIRE_TEST_KAFKA_SASL_MECHANISM"
	EnvKafkaSASLUsername  = "CACHEWIRE_TEST_KAFKA_SASL_USERNAME"
	EnvKafkaSASLPassword  = "CACHEWIRE_TEST_KAFKA_SASL_PASSWORD"
	// EnvKafkaPlaintext names the same broker's PLAINTEXT listener, for the suite's JVM clients
	// (see JVMBootstrap).
	EnvKafkaPlaintext = "CACHEWIRE_TEST_KAFKA_PLAINTEXT"
)

// Kafka is one test's Kafka: a real broker shared by the suite, or an in-process kfake cluster of
// its own.
type Kafka struct {
	// Brokers are the bootstrap addresses.
	Brokers []string
	// Conn is how every client of Brokers connects: TLS and SASL from the EnvKafkaTLSCA and
	// EnvKafkaSASL* variables in real mode, the zero value (plaintext) otherwise. Every Kafka
	// client a test builds takes it, so the suite runs the same against a secured broker.
	Conn invalidation.KafkaConn
	// Fake is the in-process cluster, for fault injection with ControlKey; nil in real mode.
	Fake *kfake.Cluster
	// Real is true when the broker came from CACHEWIRE_TEST_KAFKA.
	Real bool

	topics []string
}

// NewKafka returns the Kafka for t. An in-process cluster is closed, and topics created on a real
// broker are deleted, when t ends.
func NewKafka(t testing.TB, opts ...kfake.Opt) *Kafka {
	t.Helper()
	if addrs := os.Getenv(EnvKafka); addrs != "" {
		conn, err := KafkaConnFromEnv()
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		k := &Kafka{Brokers: splitAddrs(addrs), Conn: conn, Real: true}
		t.Cleanup(func() { k.deleteTopics(t) })
		return k
	}
	opts = append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("testenv: start in-process kafka: %v", err)
	}
	t.Cleanup(c.Close)
	return &Kafka{Brokers: c.ListenAddrs(), Fake: c}
}

// KafkaConnFromEnv returns how the suite connects to the real broker: TLS when EnvKafkaTLSCA
// names a CA file, SASL when EnvKafkaSASLMechanism is set. With neither, the zero KafkaConn.
func KafkaConnFromEnv() (invalidation.KafkaConn, error) {
	var c invalidation.KafkaConn
	if ca := os.Getenv(EnvKafkaTLSCA); ca != "" {
		pool, err := loadPool(EnvKafkaTLSCA, ca)
		if err != nil {
			return c, err
		}
		c.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if m := os.Getenv(EnvKafkaSASLMechanism); m != "" {
		mech, err := Mechanism(User{Name: os.Getenv(EnvKafkaSASLUsername), Password: os.Getenv(EnvKafkaSASLPassword), Mechanism: m})
		if err != nil {
			return c, fmt.Errorf("%s: %w", EnvKafkaSASLMechanism, err)
		}
		c.SASL = mech
	}
	return c, nil
}

// loadPool reads the CA certificates in the PEM file at path, which the variable env named.
// (Not internal/security's LoadPool: that package's dependencies import testenv in their tests.)
func loadPool(env, path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", env, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", env, path)
	}
	return pool, nil
}

// Describe names the broker for logs: its address and, in real mode, its version.
func (k *Kafka) Describe() string {
	if !k.Real {
		return "in-process kfake at " + strings.Join(k.Brokers, ",")
	}
	v := os.Getenv(EnvKafkaVersion)
	if v == "" {
		v = "unknown version"
	}
	how := "plaintext"
	switch {
	case k.Conn.TLS != nil && k.Conn.SASL != nil:
		how = "SASL_SSL, " + k.Conn.SASL.Name() + " as " + os.Getenv(EnvKafkaSASLUsername)
	case k.Conn.TLS != nil:
		how = "TLS"
	case k.Conn.SASL != nil:
		how = "SASL_PLAINTEXT"
	}
	return fmt.Sprintf("Apache Kafka %s at %s (%s)", v, strings.Join(k.Brokers, ","), how)
}

// TopicName returns a topic name unique to this test run, built from the test's name and base.
func TopicName(t testing.TB, base string) string {
	name := "cw-" + sanitize(t.Name()) + "-" + base + "-" + randomSuffix()
	if len(name) > 200 {
		name = name[len(name)-200:]
	}
	return name
}

// CreateTopic creates a topic unique to t with the given partition count and returns its name.
// It waits until every partition has a leader that answers.
func (k *Kafka) CreateTopic(t testing.TB, base string, partitions int) string {
	t.Helper()
	name := TopicName(t, base)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.Admin().Create(ctx, topics.Spec{Name: name, Partitions: partitions}); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	k.topics = append(k.topics, name)
	return name
}

// Admin returns the topic admin for the test's brokers, connecting as Conn.
func (k *Kafka) Admin() topics.Admin { return topics.Admin{Brokers: k.Brokers, Conn: k.Conn} }

func (k *Kafka) deleteTopics(t testing.TB) {
	if len(k.topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.Admin().Delete(ctx, k.topics...); err != nil {
		t.Logf("testenv: delete topics %v: %v", k.topics, err)
	}
}

// Client returns a kafka-go client for the test's brokers, connecting as Conn, whose connections
// are closed when t ends. Its transport is its own, so closing its idle connections leaves no
// goroutine behind (the default transport is shared process-wide).
func (k *Kafka) Client(t testing.TB) *kafka.Client {
	c, done := k.Conn.Client(k.Brokers, 10*time.Second)
	t.Cleanup(done)
	return c
}

// Dialer returns a kafka-go dialer that connects as Conn, for a test's own kafka.Reader.
func (k *Kafka) Dialer() *kafka.Dialer { return k.Conn.Dialer() }

// Writer returns a plain kafka-go writer to topic (no validation: tests use it to publish
// garbage), connecting as Conn, closed when t ends.
func (k *Kafka) Writer(t testing.TB, topic string) *kafka.Writer {
	tr := k.Conn.Transport()
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: topic, Transport: tr, BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll, Balancer: kafka.Murmur2Balancer{}}
	t.Cleanup(func() { _ = w.Close(); tr.CloseIdleConnections() })
	return w
}

// WaitReachable polls addr until a TCP connection succeeds or ctx ends.
func WaitReachable(ctx context.Context, addr string) error {
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not reachable: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

func sanitize(s string) string {
	s = unsafeChars.ReplaceAllString(s, "_")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func randomSuffix() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b[:])
}

// JVMBootstrap is the bootstrap address the suite's JVM clients (the Java JSON producer, the
// Spring Cloud Stream app, the Kafka Connect worker) use: the broker's PLAINTEXT listener from
// EnvKafkaPlaintext when the suite runs secured, else the first broker. They test the event
// formats those producers write, not how they authenticate, so they are not given SASL_SSL.
func (k *Kafka) JVMBootstrap() string {
	if p := os.Getenv(EnvKafkaPlaintext); k.Real && p != "" {
		return p
	}
	return k.Brokers[0]
}

// Flags returns the flags that make a cachewire binary (cachenode, writer, relay, cachectl)
// connect to the test's brokers as Conn: --kafka-brokers and, against a secured broker, the CA,
// the SASL mechanism and user, and --kafka-sasl-password-file (a file in t's temporary
// directory: a password is never a command-line value).
func (k *Kafka) Flags(t testing.TB) []string {
	t.Helper()
	args := []string{"--kafka-brokers", strings.Join(k.Brokers, ",")}
	if !k.Real {
		return args
	}
	if ca := os.Getenv(EnvKafkaTLSCA); ca != "" {
		args = append(args, "--kafka-tls-ca", ca)
	}
	if m := os.Getenv(EnvKafkaSASLMechanism); m != "" {
		args = append(args, "--kafka-sasl-mechanism", m, "--kafka-sasl-username", os.Getenv(EnvKafkaSASLUsername),
			"--kafka-sasl-password-file", secretFile(t, "kafka-password", os.Getenv(EnvKafkaSASLPassword)))
	}
	return args
}

// secretFile writes secret to a file of its own (mode 0600) in t's temporary directory.
func secretFile(t testing.TB, name, secret string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), name)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString(secret); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return f.Name()
}
