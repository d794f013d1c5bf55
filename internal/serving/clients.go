package serving

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/internal/retry"
)

// Anonymous names a caller that presented neither a client certificate nor a bearer token, on a
// server that does not require either.
const Anonymous = "anonymous"

// ClientsConfig says how a server identifies its callers and what each may do. The zero value
// identifies every caller as Anonymous and limits nobody.
type ClientsConfig struct {
	// Tokens maps bearer tokens to client names (see LoadTokens). When set, a caller must send
	// "authorization: Bearer TOKEN" with a known token, or present a client certificate the
	// listener verified; others get Unauthenticated.
	Tokens map[string]string
	// RequireIdentity refuses callers that are neither: set when the listener verifies client
	// certificates or Tokens is set (New sets it for Tokens).
	RequireIdentity bool
	// Rate is how many requests per second one client may make, with bursts up to Burst; more
	// get ResourceExhausted. Zero: no rate limit. If Burst is zero, it defaults to Rate (at least 1).
	Rate  float64
	Burst int
	// MaxInFlight is how many requests of one client may run at once; more get
	// ResourceExhausted. Zero: no bound.
	MaxInFlight int
	// Writers, when set, are the only clients allowed to call the methods in Mutating; others get
	// PermissionDenied.
	Writers []string
	// Mutating are the method names (the last element of the full method, "Set") that change
	// state.
	Mutating []string
	// Exempt are full-method prefixes that need no identity and count against no limit: gRPC
	// health, so that probes without credentials keep working. If nil, "/grpc.health.v1.Health/".
	Exempt []string
}

// LoadTokens reads a tokens file: one "NAME TOKEN" pair per line, separated by white space;
// blank lines and lines starting with # are ignored. Names and tokens must be unique, and a token
// at least 16 characters long.
func LoadTokens(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	tokens, names := map[string]string{}, map[string]bool{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		switch {
		case len(fields) != 2:
			return nil, fmt.Errorf("tokens file %s:%d: want NAME TOKEN", path, line)
		case len(fields[1]) < 16:
			return nil, fmt.Errorf("tokens file %s:%d: the token of %q is shorter than 16 characters", path, line, fields[0])
		case names[fields[0]]:
			return nil, fmt.Errorf("tokens file %s:%d: client %q appears twice", path, line, fields[0])
		case tokens[fields[1]] != "":
			return nil, fmt.Errorf("tokens file %s:%d: the token of %q is also %q's", path, line, fields[0], tokens[fields[1]])
		}
		tokens[fields[1]], names[fields[0]] = fields[0], true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("tokens file %s: no tokens", path)
	}
	return tokens, nil
}

type clientKey struct{}

// ClientName returns the caller's name that the server's interceptor put in ctx: the bearer
// token's client, the client certificate's subject common name, or Anonymous. "" outside a
// request.
func ClientName(ctx context.Context) string {
	name, _ := ctx.Value(clientKey{}).(string)
	return name
}

// clients identifies callers and enforces per-client limits.
type clients struct {
	cfg     ClientsConfig
	log     *slog.Logger
	logRate *retry.LogLimiter
	now     func() time.Time

	requests *prometheus.CounterVec
	rejected *prometheus.CounterVec

	mu    sync.Mutex
	state map[string]*clientState
}

type clientState struct {
	name     string
	mu       sync.Mutex
	tokens   float64
	last     time.Time
	inFlight int
	requests prometheus.Counter
}

func newClients(cfg ClientsConfig, reg *prometheus.Registry, log *slog.Logger) *clients {
	if len(cfg.Tokens) > 0 {
		cfg.RequireIdentity = true
	}
	if cfg.Rate > 0 && cfg.Burst <= 0 {
		cfg.Burst = max(1, int(math.Ceil(cfg.Rate)))
	}
	if cfg.Exempt == nil {
		cfg.Exempt = []string{"/grpc.health.v1.Health/"}
	}
	c := &clients{cfg: cfg, log: log, logRate: retry.NewLogLimiter(10, time.Second), now: time.Now, state: map[string]*clientState{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cachewire_client_requests_total",
			Help: "gRPC requests admitted, by client (bearer token's name, certificate subject, or anonymous)."}, []string{"client"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cachewire_client_rejected_total",
			Help: "gRPC requests refused by client and reason: rate, in_flight, unauthenticated, forbidden."}, []string{"client", "reason"}),
	}
	reg.MustRegister(c.requests, c.rejected)
	return c
}

// identify names the caller of ctx, or returns the Unauthenticated status.
func (c *clients) identify(ctx context.Context) (string, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if auth := md.Get("authorization"); len(auth) > 0 {
			token, ok := strings.CutPrefix(auth[0], "Bearer ")
			if !ok {
				return "", status.Error(codes.Unauthenticated, `the authorization header must be "Bearer TOKEN"`)
			}
			if name, ok := c.lookup(strings.TrimSpace(token)); ok {
				return name, nil
			}
			if len(c.cfg.Tokens) > 0 {
				return "", status.Error(codes.Unauthenticated, "unknown bearer token")
			}
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			return subjectName(ti.State.VerifiedChains[0][0]), nil
		}
	}
	if c.cfg.RequireIdentity {
		return "", status.Error(codes.Unauthenticated, "this server identifies every caller: send a bearer token (authorization: Bearer TOKEN) or a client certificate")
	}
	return Anonymous, nil
}

// lookup compares the token against every known one in constant time.
func (c *clients) lookup(token string) (string, bool) {
	found := ""
	for t, name := range c.cfg.Tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
			found = name
		}
	}
	return found, found != ""
}

// subjectName is a certificate's common name, or its whole subject when it has none.
func subjectName(cert *x509.Certificate) string {
	if cert.Subject.CommonName != "" {
		return cert.Subject.CommonName
	}
	return cert.Subject.String()
}

func (c *clients) client(name string) *clientState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.state[name]
	if !ok {
		st = &clientState{name: name, tokens: float64(c.cfg.Burst), last: c.now(), requests: c.requests.WithLabelValues(name)}
		c.state[name] = st
	}
	return st
}

// admit takes one token and one in-flight slot of st, or says which limit refused.
func (c *clients) admit(st *clientState) (release func(), reason string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if c.cfg.MaxInFlight > 0 && st.inFlight >= c.cfg.MaxInFlight {
		return nil, "in_flight"
	}
	if c.cfg.Rate > 0 {
		now := c.now()
		st.tokens = min(float64(c.cfg.Burst), st.tokens+now.Sub(st.last).Seconds()*c.cfg.Rate)
		st.last = now
		if st.tokens < 1 {
			return nil, "rate"
		}
		st.tokens--
	}
	st.inFlight++
	return func() {
		st.mu.Lock()
		st.inFlight--
		st.mu.Unlock()
	}, ""
}

func (c *clients) exempt(method string) bool {
	return slices.ContainsFunc(c.cfg.Exempt, func(p string) bool { return strings.HasPrefix(method, p) })
}

func (c *clients) reject(name, method, reason string, err error) error {
	c.rejected.WithLabelValues(name, reason).Inc()
	if c.logRate.Allow() {
		c.log.Warn("request refused", "client", name, "method", method, "reason", reason)
	}
	return err
}

func (c *clients) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if c.exempt(info.FullMethod) {
		return handler(ctx, req)
	}
	name, err := c.identify(ctx)
	if err != nil {
		return nil, c.reject("", info.FullMethod, "unauthenticated", err)
	}
	method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	if len(c.cfg.Writers) > 0 && slices.Contains(c.cfg.Mutating, method) && !slices.Contains(c.cfg.Writers, name) {
		return nil, c.reject(name, info.FullMethod, "forbidden",
			status.Errorf(codes.PermissionDenied, "client %q may not call %s: it changes state, which only %v may do", name, method, c.cfg.Writers))
	}
	st := c.client(name)
	release, reason := c.admit(st)
	if release == nil {
		what := fmt.Sprintf("more than %d requests in flight", c.cfg.MaxInFlight)
		if reason == "rate" {
			what = fmt.Sprintf("over %g requests/s (burst %d)", c.cfg.Rate, c.cfg.Burst)
		}
		return nil, c.reject(name, info.FullMethod, reason,
			status.Errorf(codes.ResourceExhausted, "client %q: %s: back off and retry", name, what))
	}
	defer release()
	st.requests.Inc()
	return handler(context.WithValue(ctx, clientKey{}, name), req)
}

// stream identifies the callers of streaming methods (reflection, health watch); it limits
// nothing.
func (c *clients) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if c.exempt(info.FullMethod) {
		return handler(srv, ss)
	}
	name, err := c.identify(ss.Context())
	if err != nil {
		return c.reject("", info.FullMethod, "unauthenticated", err)
	}
	c.client(name).requests.Inc()
	return handler(srv, &namedStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), clientKey{}, name)})
}

type namedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *namedStream) Context() context.Context { return s.ctx }
