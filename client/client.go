package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/internal/retry"
	"github.com/cachewire/cachewire/internal/security"
)

// Error is a failed call: the gRPC code and the server's message.
type Error struct {
	Method  string
	Code    codes.Code
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("client: %s: %s: %s", e.Method, e.Code, e.Message)
}

// Is matches the package's sentinel errors by code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == codes.NotFound
	case ErrInvalidArgument:
		return e.Code == codes.InvalidArgument
	case ErrUnavailable:
		return e.Code == codes.Unavailable
	case ErrResourceExhausted:
		return e.Code == codes.ResourceExhausted
	case ErrUnauthenticated:
		return e.Code == codes.Unauthenticated
	case ErrPermissionDenied:
		return e.Code == codes.PermissionDenied
	}
	return false
}

func wrap(method string, err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("client: %s: %w", method, err)
	}
	if s.Code() == codes.DeadlineExceeded {
		return fmt.Errorf("client: %s: %s: %w", method, s.Message(), context.DeadlineExceeded)
	}
	if s.Code() == codes.Canceled {
		return fmt.Errorf("client: %s: %s: %w", method, s.Message(), context.Canceled)
	}
	if s.Code() == codes.ResourceExhausted && strings.Contains(s.Message(), "larger than max") {
		// gRPC's transport refused a request over the server's message bound before any
		// handler saw it. Retrying cannot help: it is an invalid request, not a busy server.
		return &Error{Method: method, Code: codes.InvalidArgument, Message: "request is larger than the server accepts: " + s.Message()}
	}
	return &Error{Method: method, Code: s.Code(), Message: s.Message()}
}

// Option configures a client.
type Option func(*options)

type options struct {
	timeout     time.Duration
	attempts    int
	backoff     time.Duration
	dialOptions []grpc.DialOption
	tls         *tls.Config
	token       string
	near        *NearCacheConfig
	nearApplied func(seq uint64) // for tests: called after each Watch message is applied
}

func defaults() options {
	return options{timeout: 2 * time.Second, attempts: 4, backoff: 20 * time.Millisecond}
}

// WithTimeout sets the deadline of every call whose context has none. Default 2 s.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRetries sets how many times an idempotent call that failed with Unavailable is retried
// (with exponential back-off from backoff, and jitter). Default 3 retries from 20 ms.
// Writes that create a version (Put, Delete) are never retried.
func WithRetries(retries int, backoff time.Duration) Option {
	return func(o *options) { o.attempts, o.backoff = retries+1, backoff }
}

// WithTLS connects over TLS with cfg (see TLSFiles for one built from PEM files). The default is
// plaintext.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithBearerToken sends "authorization: Bearer TOKEN" with every call, for a server started
// with --tokens-file. Use it with TLS, unless client and server share one host's loopback: the
// token is a password.
func WithBearerToken(token string) Option { return func(o *options) { o.token = token } }

// TLSFiles builds a client TLS configuration from PEM files: ca signs the server's certificate
// (empty: the system roots), cert and key are this client's own (mTLS; both or neither), and
// serverName is the name the server's certificate must hold (empty: the host dialed). The
// client certificate is read again when its files change.
func TLSFiles(ca, cert, key, serverName string) (*tls.Config, error) {
	return security.ClientFiles{Enable: true, CA: ca, Cert: cert, Key: key, ServerName: serverName}.Config()
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false so that a sidecar on loopback can use a token without TLS.
func (bearer) RequireTransportSecurity() bool { return false }

// WithDialOptions adds gRPC dial options (interceptors, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithTracing traces the client's calls with tp (OpenTelemetry, through otelgrpc) and sends
// their W3C trace context to the node or the writer, so that a traced application's Get or Put
// is the parent of the server's spans: with a writer that traces, one Put's trace then holds
// every node's apply of its event. Health checks and Watch streams are not traced. Without it,
// calls carry no trace context.
func WithTracing(tp trace.TracerProvider) Option {
	return WithDialOptions(grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(propagation.TraceContext{}),
		// Health checks and a near cache's Watch stream are not traced (nor are they on the node).
		otelgrpc.WithFilter(filters.Not(filters.Any(filters.HealthCheck(), filters.MethodName("Watch")))))))
}

// conn is what Cache and Writer share: a connection and the call policy.
type conn struct {
	cc     *grpc.ClientConn
	o      options
	health healthpb.HealthClient
}

func dial(target, service string, opts []Option) (*conn, error) {
	o := defaults()
	for _, opt := range opts {
		opt(&o)
	}
	if o.attempts < 1 {
		o.attempts = 1
	}
	creds := insecure.NewCredentials()
	if o.tls != nil {
		creds = credentials.NewTLS(o.tls)
	}
	dopts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if o.token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer(o.token)))
	}
	dopts = append(append(dopts,
		// Client-side health checking: connections to a server that reports NOT_SERVING (a
		// node still positioning itself, or draining) are not used.
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"healthCheckConfig":{"serviceName":%q}}`, service)),
		// Reconnect quickly after a node or writer restarts (gRPC's default waits up to 120 s).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})), o.dialOptions...)
	cc, err := grpc.NewClient(target, dopts...)
	if err != nil {
		return nil, fmt.Errorf("client: %q: %w", target, err)
	}
	return &conn{cc: cc, o: o, health: healthpb.NewHealthClient(cc)}, nil
}

// call runs f with the default deadline, retrying on Unavailable when idempotent.
func (c *conn) call(ctx context.Context, method string, idempotent bool, f func(ctx context.Context) error) error {
	if _, ok := ctx.Deadline(); !ok && c.o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.o.timeout)
		defer cancel()
	}
	attempts := 1
	if idempotent {
		attempts = c.o.attempts
	}
	b := retry.NewBackoff(c.o.backoff, c.o.backoff<<uint(max(attempts-2, 0)))
	var err error
	for i := 0; i < attempts; i++ {
		if err = f(ctx); status.Code(err) != codes.Unavailable || i == attempts-1 {
			break
		}
		if !retry.Sleep(ctx, b.Next()) {
			break
		}
	}
	return wrap(method, err)
}

func (c *conn) check(ctx context.Context, service string) error {
	return c.call(ctx, "Health", true, func(ctx context.Context) error {
		resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return status.Errorf(codes.Unavailable, "%s reports %s", service, resp.Status)
		}
		return nil
	})
}
