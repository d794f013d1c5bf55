package invalidation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
)

// KafkaConn says how a Kafka client connects to the brokers: over TLS or not, authenticated
// with SASL or not. Every Kafka client in cachewire (publisher, subscriber, L2 group, relays,
// topic administration, cachectl tail) takes one, so one setting secures all of them. The zero
// value is a plaintext connection without authentication. It is a plain value: copy it freely.
type KafkaConn struct {
	// TLS, when set, encrypts every connection (an SSL or SASL_SSL listener). Its RootCAs verify
	// the brokers; its Certificates, if any, identify this client (mTLS). A config without
	// ServerName gets the broker's host name.
	TLS *tls.Config
	// SASL, when set, authenticates every connection: kafka-go's plain.Mechanism or
	// scram.Mechanism (SCRAM-SHA-256, SCRAM-SHA-512). Without TLS the password travels in the
	// clear (PLAIN) or is exposed to replay (SCRAM): use both.
	SASL sasl.Mechanism
	// Dial, when set, opens every TCP connection (tests use it to cut one client off the
	// network); TLS and SASL run over what it returns. If nil, a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// kafkaDialTimeout bounds one connection attempt, TLS and SASL handshakes included.
const kafkaDialTimeout = 5 * time.Second

// Dialer returns a kafka-go Dialer (for readers and direct connections) that connects as k says.
func (k KafkaConn) Dialer() *kafka.Dialer {
	return &kafka.Dialer{Timeout: kafkaDialTimeout, DualStack: true, DialFunc: k.Dial, TLS: k.TLS, SASLMechanism: k.SASL}
}

// Transport returns a kafka-go Transport (for writers and kafka.Client) of its own that
// connects as k says. Close its idle connections when done with it.
func (k KafkaConn) Transport() *kafka.Transport {
	return &kafka.Transport{DialTimeout: kafkaDialTimeout, Dial: k.Dial, TLS: k.TLS, SASL: k.SASL}
}

// Client returns a kafka.Client for admin and metadata requests to brokers, with a transport of
// its own, and the function that releases its connections.
func (k KafkaConn) Client(brokers []string, timeout time.Duration) (*kafka.Client, func()) {
	tr := k.Transport()
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: timeout, Transport: tr}, tr.CloseIdleConnections
}

// ErrKafkaAccess is wrapped by Check's errors for what retrying cannot fix: the brokers refused
// the credentials, their certificate was not trusted, or the principal may not do what is
// needed. A process that gets it at start exits; Kafka merely down is not such an error.
var ErrKafkaAccess = errors.New("invalidation: Kafka refused this client")

// Check makes one metadata request for topics (all topics if none) and returns nil when it
// succeeds. Errors that retrying cannot fix (see AccessError) wrap ErrKafkaAccess and say what to
// fix; other errors (brokers unreachable) are returned as they are, for the caller to tolerate.
func (k KafkaConn) Check(ctx context.Context, brokers []string, topics ...string) error {
	c, done := k.Client(brokers, kafkaDialTimeout)
	defer done()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err == nil {
		for _, t := range md.Topics {
			if t.Error != nil {
				err = fmt.Errorf("topic %q: %w", t.Name, t.Error)
				break
			}
		}
	}
	if err == nil {
		return nil
	}
	if a := AccessError(err); a != nil {
		return a
	}
	return fmt.Errorf("invalidation: Kafka at %v: %w", brokers, err)
}

// AccessError returns err wrapped in ErrKafkaAccess, with what to fix, when it is one retrying
// cannot fix: a SASL authentication failure, an unsupported SASL mechanism, a broker
// certificate the client does not trust (or a handshake the broker refused, as for a missing
// client certificate), or an authorization failure. Otherwise it returns nil.
func AccessError(err error) error {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
		alert            tls.AlertError
		record           tls.RecordHeaderError
	)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kafka.SASLAuthenticationFailed):
		return fmt.Errorf("%w: SASL authentication failed: check the Kafka user name, password and mechanism: %v", ErrKafkaAccess, err)
	case errors.Is(err, kafka.UnsupportedSASLMechanism), errors.Is(err, kafka.IllegalSASLState):
		return fmt.Errorf("%w: the broker does not accept this SASL mechanism on this listener: %v", ErrKafkaAccess, err)
	case errors.Is(err, kafka.TopicAuthorizationFailed), errors.Is(err, kafka.GroupAuthorizationFailed),
		errors.Is(err, kafka.ClusterAuthorizationFailed), errors.Is(err, kafka.TransactionalIDAuthorizationFailed):
		return fmt.Errorf("%w: not authorized (check the principal's ACLs): %v", ErrKafkaAccess, err)
	case errors.As(err, &unknownAuthority), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return fmt.Errorf("%w: the broker's TLS certificate is not trusted (check the CA file and server name): %v", ErrKafkaAccess, err)
	case errors.As(err, &alert):
		return fmt.Errorf("%w: the broker refused the TLS handshake (a client certificate it does not accept?): %v", ErrKafkaAccess, err)
	case errors.As(err, &record):
		return fmt.Errorf("%w: the broker did not answer in TLS (a plaintext listener?): %v", ErrKafkaAccess, err)
	}
	return nil
}
