package invalidation_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/certgen"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// These tests run against a real Apache Kafka broker with a SASL_SSL listener and ACLs
// (testenv.NewSecureKafka); they skip unless CACHEWIRE_TEST_KAFKA_CLASSPATH names its jars.

// TestKafkaConnSCRAMAndACLs checks that KafkaConn carries TLS and SCRAM to a real broker and
// that the broker's ACLs then decide: the writer principal cannot publish before it is granted
// WRITE and then publishes through a Publisher, the node principal reads the event back in its
// consumer group, and the node's own publish to the same topic is refused for want of WRITE.
func TestKafkaConnSCRAMAndACLs(t *testing.T) {
	k := testenv.NewSecureKafka(t)
	topic := k.CreateTopic(t, "inval", 1)
	group := "cw-node-" + strings.ReplaceAll(topic, "cw-", "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// No ACL, no access: allow.everyone.if.no.acl.found=false.
	denied, err := invalidation.NewPublisher(invalidation.PublisherConfig{
		Brokers: k.Brokers, Topic: topic, Kafka: k.Conn(t, testenv.WriterUser), MaxAttempts: 1})
	if err != nil {
		t.Fatalf("NewPublisher as %s: %v", testenv.WriterUser, err)
	}
	deniedCtx, deniedCancel := context.WithTimeout(ctx, 10*time.Second)
	err = denied.Publish(deniedCtx, invalidation.Event{Key: "user:42", Version: 6, Op: invalidation.OpInvalidate})
	deniedCancel()
	_ = denied.Close()
	// Without DESCRIBE the topic is hidden: kafka-go's transport asks for the metadata of all
	// topics, Kafka leaves out those the principal may not describe, and kafka-go reports the
	// missing one as UnknownTopicOrPartition rather than as an authorization failure.
	if !isKafkaError(err, kafka.UnknownTopicOrPartition) && !isKafkaError(err, kafka.TopicAuthorizationFailed) {
		t.Fatalf("publish as %s before any grant: got error %v, want %v or %v", testenv.WriterUser, err,
			kafka.UnknownTopicOrPartition, kafka.TopicAuthorizationFailed)
	}

	k.GrantWriter(t, topic)
	k.GrantNode(t, topic, "cw-node-")

	pub, err := invalidation.NewPublisher(invalidation.PublisherConfig{
		Brokers: k.Brokers, Topic: topic, Kafka: k.Conn(t, testenv.WriterUser), MaxAttempts: 1})
	if err != nil {
		t.Fatalf("NewPublisher as %s: %v", testenv.WriterUser, err)
	}
	defer pub.Close()
	want := invalidation.Event{Key: "user:42", Version: 7, Op: invalidation.OpInvalidate, Source: "kafkaconn_test"}
	if err := pub.Publish(ctx, want); err != nil {
		t.Fatalf("publish as %s (SCRAM-SHA-256, WRITE granted): %v", testenv.WriterUser, err)
	}

	node := k.Conn(t, testenv.NodeUser)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: k.Brokers, Topic: topic, GroupID: group, Dialer: node.Dialer(),
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond,
	})
	defer r.Close()
	readCtx, readCancel := context.WithTimeout(ctx, 45*time.Second)
	m, err := r.ReadMessage(readCtx)
	readCancel()
	if err != nil {
		t.Fatalf("read %s in group %s as %s (SCRAM-SHA-512, READ granted): %v", topic, group, testenv.NodeUser, err)
	}
	got, err := invalidation.Decode(m.Value, invalidation.Limits{})
	if err != nil {
		t.Fatalf("decode the record read back: %v", err)
	}
	if string(m.Key) != want.Key || got.Key != want.Key || got.Version != want.Version || got.Op != want.Op {
		t.Fatalf("read back record key %q event %+v, want key %q event %+v", m.Key, got, want.Key, want)
	}

	nodePub, err := invalidation.NewPublisher(invalidation.PublisherConfig{
		Brokers: k.Brokers, Topic: topic, Kafka: node, MaxAttempts: 1})
	if err != nil {
		t.Fatalf("NewPublisher as %s: %v", testenv.NodeUser, err)
	}
	defer nodePub.Close()
	err = nodePub.Publish(ctx, invalidation.Event{Key: "user:42", Version: 8, Op: invalidation.OpInvalidate})
	if !isKafkaError(err, kafka.TopicAuthorizationFailed) {
		t.Fatalf("publish as %s without WRITE: got error %v, want %v", testenv.NodeUser, err, kafka.TopicAuthorizationFailed)
	}
}

// TestKafkaConnAuthentication checks the other ways a KafkaConn meets the SASL_SSL listener: a
// PLAIN user gets in, a wrong SCRAM password is refused at once, and a client that trusts another
// CA fails the TLS handshake.
func TestKafkaConnAuthentication(t *testing.T) {
	k := testenv.NewSecureKafka(t)

	t.Run("PlainUserConnects", func(t *testing.T) {
		c, done := k.Conn(t, testenv.PlainUser).Client(k.Brokers, 10*time.Second)
		defer done()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
		if err != nil {
			t.Fatalf("metadata as PLAIN user %s over SASL_SSL: %v", testenv.PlainUser, err)
		}
		if len(md.Brokers) == 0 {
			t.Fatalf("metadata as %s lists no brokers", testenv.PlainUser)
		}
	})

	t.Run("WrongSCRAMPasswordFailsFast", func(t *testing.T) {
		u := k.User(t, testenv.NodeUser)
		u.Password = "not-" + u.Password
		d := k.ConnFor(t, u).Dialer()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		conn, err := d.DialContext(ctx, "tcp", k.Brokers[0])
		elapsed := time.Since(start)
		if err == nil {
			_ = conn.Close()
			t.Fatalf("dial as %s with a wrong password succeeded", u.Name)
		}
		if !errors.Is(err, kafka.SASLAuthenticationFailed) || !strings.Contains(strings.ToLower(err.Error()), "authentication failed") {
			t.Fatalf("dial as %s with a wrong password: got %v, want %v saying authentication failed", u.Name, err, kafka.SASLAuthenticationFailed)
		}
		if elapsed > 5*time.Second {
			t.Fatalf("a wrong password took %v to be refused, want well under 10s", elapsed)
		}
	})

	t.Run("UntrustedCAFailsTLS", func(t *testing.T) {
		other, err := certgen.NewCA("some other CA")
		if err != nil {
			t.Fatalf("make another CA: %v", err)
		}
		conn := k.Conn(t, testenv.AdminUser)
		conn.TLS = &tls.Config{RootCAs: other.Pool(), MinVersion: tls.VersionTLS12}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := conn.Dialer().DialContext(ctx, "tcp", k.Brokers[0])
		if err == nil {
			_ = c.Close()
			t.Fatalf("dial trusting another CA succeeded")
		}
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Fatalf("dial trusting another CA: got %v (%T), want an x509.UnknownAuthorityError", err, err)
		}
	})
}

// isKafkaError reports whether err is, or is a kafka.WriteErrors holding, the Kafka error code
// want (WriteErrors does not unwrap to its elements).
func isKafkaError(err error, want kafka.Error) bool {
	if errors.Is(err, want) {
		return true
	}
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) {
		for _, e := range werrs {
			if errors.Is(e, want) {
				return true
			}
		}
	}
	return false
}
