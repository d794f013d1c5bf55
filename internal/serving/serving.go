// Package serving is the serving surface shared by the cache node and the writer: the gRPC and
// HTTP listeners, the gRPC server with one request-metrics interceptor, gRPC health and
// reflection, the HTTP mux (/healthz, /readyz, /metrics, optional /debug/pprof/), and an orderly
// stop.
//
// A stop goes in three steps, so that load balancers and Kubernetes readiness probes see a
// process leave before it is gone. First health reports NOT_SERVING and /readyz answers 503 while
// requests are still served, for Config.DrainDelay. Then the listeners close and requests in
// flight finish, bounded by Config.ShutdownTimeout. Then the servers stop.
//
//	s, err := serving.New(serving.Config{Name: "writer", GRPCAddr: addr, Registry: reg,
//		Register: func(g *grpc.Server) { pb.RegisterWriterServiceServer(g, svc) }})
//	if err := s.Start(); err != nil { ... }
//	s.SetServing(true)
//	...
//	s.Shutdown(ctx) // NOT_SERVING, drain delay, graceful stop
//
// With Config.TLS both listeners speak TLS (mTLS when it verifies client certificates), and
// with Config.Clients every request is attributed to a named client and held to that client's
// limits (see ClientsConfig and ClientName).
package serving

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/cachewire/cachewire/internal/tracing"
)

// ErrClosed is returned by Start, Shutdown and Close once the server was stopped.
var ErrClosed = errors.New("serving: closed")

// LatencyBuckets is the one bucket layout of cachewire_grpc_request_duration_seconds, in every
// process, so that the node's and the writer's latencies can be aggregated.
var LatencyBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5}

// Config configures a Server. Every field documents its zero-value default.
type Config struct {
	// Name names the process in errors and logs ("node", "writer"). Required.
	Name string
	// GRPCAddr is where gRPC listens. Required; port 0 picks a free port (see Server.GRPCAddr).
	GRPCAddr string
	// HTTPAddr is where HTTP listens; empty or "-" disables HTTP.
	HTTPAddr string
	// Pprof serves /debug/pprof/ on HTTPAddr.
	Pprof bool
	// MaxRecvMsgBytes bounds one gRPC request at the transport, where gRPC refuses it with
	// ResourceExhausted before any handler sees it. If zero, gRPC's default (4 MiB). Set it with
	// RecvMsgBytes, well above the value limit, so that the handler refuses an oversize value
	// with InvalidArgument naming the limit.
	MaxRecvMsgBytes int
	// Tracer, when set, traces the calls the server receives (continuing the trace context
	// callers send in W3C traceparent metadata); nil traces nothing.
	Tracer trace.TracerProvider
	// Register registers the process's gRPC services. Required.
	Register func(*grpc.Server)
	// Interceptors run inside the metrics interceptor, in order (a request limit, say).
	Interceptors []grpc.UnaryServerInterceptor
	// Registry receives the request metrics and is what /metrics serves. Required.
	Registry *prometheus.Registry
	// Ready, when set, says whether /readyz answers 200, and if not why; health follows
	// SetServing. If nil, /readyz follows SetServing too.
	Ready func() (bool, string)
	// DrainDelay is how long Shutdown reports NOT_SERVING (health, /readyz) while still serving,
	// before it stops accepting connections. Zero: no delay.
	DrainDelay time.Duration
	// ShutdownTimeout bounds draining requests in flight. If zero, 10 seconds.
	ShutdownTimeout time.Duration
	// Logger receives the server's logs. If nil, slog.Default().
	Logger *slog.Logger
	// TLS, when set, is what both listeners serve (security.ServerTLS's Config reloads rotated
	// certificates and can require client certificates). Nil: plaintext.
	TLS *tls.Config
	// Clients, when set, identifies every gRPC caller (bearer token or client certificate),
	// labels its metrics and logs with the name, and enforces per-client limits. Nil: callers
	// are not told apart.
	Clients *ClientsConfig
}

func (c *Config) validate() error {
	switch {
	case c.Name == "":
		return errors.New("serving: no Name")
	case c.GRPCAddr == "":
		return fmt.Errorf("serving: %s: no gRPC address", c.Name)
	case c.Register == nil:
		return fmt.Errorf("serving: %s: no services to register", c.Name)
	case c.Registry == nil:
		return fmt.Errorf("serving: %s: no metrics registry", c.Name)
	case c.DrainDelay < 0 || c.ShutdownTimeout < 0:
		return fmt.Errorf("serving: %s: drain delay and shutdown timeout must not be negative", c.Name)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Server is one process's serving surface. Its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	grpc   *grpc.Server
	health *health.Server
	http   *http.Server
	glis   net.Listener
	hlis   net.Listener
	m      *requestMetrics
	wg     sync.WaitGroup

	services []string
	mu       sync.Mutex // orders SetServing and the start of a stop
	serving  atomic.Bool
	draining atomic.Bool
	started  atomic.Bool
	closed   atomic.Bool
}

// New builds the gRPC server and registers the services; it does no I/O.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg}
	s.m = newRequestMetrics(cfg.Registry)
	unary := []grpc.UnaryServerInterceptor{s.m.observe}
	var opts []grpc.ServerOption
	if cfg.Clients != nil {
		c := newClients(*cfg.Clients, cfg.Registry, cfg.Logger)
		unary = append(unary, c.unary)
		opts = append(opts, grpc.ChainStreamInterceptor(c.stream))
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(append(unary, cfg.Interceptors...)...))
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	if cfg.MaxRecvMsgBytes > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes))
	}
	if cfg.Tracer != nil {
		opts = append(opts, tracing.ServerOption(cfg.Tracer))
	}
	s.grpc = grpc.NewServer(opts...)
	cfg.Register(s.grpc)
	for name, info := range s.grpc.GetServiceInfo() {
		s.services = append(s.services, name)
		for _, m := range info.Methods {
			s.m.bind(m.Name)
		}
	}
	s.health = health.NewServer()
	s.setHealth(false)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s, nil
}

func (s *Server) setHealth(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	for _, name := range s.services {
		s.health.SetServingStatus(name, st)
	}
}

// Start listens on both addresses and serves until Shutdown or Close. Health reports
// NOT_SERVING until SetServing(true).
func (s *Server) Start() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if !s.started.CompareAndSwap(false, true) {
		return fmt.Errorf("serving: %s: Start called twice", s.cfg.Name)
	}
	var err error
	if s.glis, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("%s: gRPC listen on %s: %w", s.cfg.Name, s.cfg.GRPCAddr, err)
	}
	if s.cfg.HTTPAddr != "" && s.cfg.HTTPAddr != "-" {
		if s.hlis, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
			s.glis.Close()
			return fmt.Errorf("%s: HTTP listen on %s: %w", s.cfg.Name, s.cfg.HTTPAddr, err)
		}
		if s.cfg.TLS != nil {
			s.hlis = tls.NewListener(s.hlis, httpTLS(s.cfg.TLS))
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(s.glis); err != nil && !s.closed.Load() {
			s.cfg.Logger.Error("gRPC server stopped", "err", err)
		}
	}()
	if s.hlis != nil {
		s.http = &http.Server{Handler: s.mux(), ReadHeaderTimeout: 5 * time.Second}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.http.Serve(s.hlis); !errors.Is(err, http.ErrServerClosed) {
				s.cfg.Logger.Error("HTTP server stopped", "err", err)
			}
		}()
	}
	return nil
}

// SetServing sets what health reports (ignored once Shutdown began).
func (s *Server) SetServing(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return
	}
	s.serving.Store(ok)
	s.setHealth(ok)
}

// drain begins a stop: from now on health reports NOT_SERVING.
func (s *Server) drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining.Store(true)
	s.serving.Store(false)
	s.setHealth(false)
}

// Draining reports whether Shutdown or Close began.
func (s *Server) Draining() bool { return s.draining.Load() }

// GRPCAddr returns the address gRPC listens on (after Start), or the configured one.
func (s *Server) GRPCAddr() string {
	if s.glis != nil {
		return s.glis.Addr().String()
	}
	return s.cfg.GRPCAddr
}

// HTTPAddr returns the address HTTP listens on (after Start), or "" when disabled.
func (s *Server) HTTPAddr() string {
	if s.hlis != nil {
		return s.hlis.Addr().String()
	}
	return ""
}

func (s *Server) mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.draining.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		ok, why := s.serving.Load(), "not serving yet"
		if s.cfg.Ready != nil {
			ok, why = s.cfg.Ready()
		}
		if !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Shutdown reports NOT_SERVING (health and /readyz) and keeps serving for DrainDelay (or until
// ctx ends), then stops accepting connections and lets requests in flight finish within
// ShutdownTimeout (and ctx), then stops. Later calls return ErrClosed.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	s.drain()
	if s.started.Load() && s.cfg.DrainDelay > 0 {
		s.cfg.Logger.Info("reporting NOT_SERVING before stopping", "drain_delay", s.cfg.DrainDelay)
		t := time.NewTimer(s.cfg.DrainDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	s.health.Shutdown()
	err := gracefulStop(ctx, s.grpc)
	if err != nil {
		err = fmt.Errorf("%s: %w", s.cfg.Name, err)
	}
	if s.http != nil {
		_ = s.http.Shutdown(ctx)
	}
	s.wg.Wait()
	return err
}

// Close stops at once: requests in flight fail. Later calls return ErrClosed.
func (s *Server) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	s.drain()
	s.health.Shutdown()
	s.grpc.Stop()
	if s.http != nil {
		_ = s.http.Close()
	}
	s.wg.Wait()
	return nil
}

// requestMetrics counts and times every unary request. The label sets of every registered method
// (and its OK code) are bound once, so the hot path does no label lookup.
type requestMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	mu      sync.RWMutex
	methods map[string]*methodMetrics
}

type methodMetrics struct {
	latency prometheus.Observer
	ok      prometheus.Counter
	name    string
	mu      sync.Mutex
	codes   map[codes.Code]prometheus.Counter
}

func newRequestMetrics(reg *prometheus.Registry) *requestMetrics {
	m := &requestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cachewire_grpc_requests_total", Help: "gRPC requests by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cachewire_grpc_request_duration_seconds", Help: "gRPC request latency by method.", Buckets: LatencyBuckets,
		}, []string{"method"}),
		methods: map[string]*methodMetrics{},
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

func (m *requestMetrics) bind(method string) *methodMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mm, ok := m.methods[method]; ok {
		return mm
	}
	mm := &methodMetrics{name: method, latency: m.latency.WithLabelValues(method),
		ok: m.requests.WithLabelValues(method, codes.OK.String()), codes: map[codes.Code]prometheus.Counter{}}
	m.methods[method] = mm
	return mm
}

func (m *requestMetrics) method(fullMethod string) *methodMetrics {
	name := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	m.mu.RLock()
	mm, ok := m.methods[name]
	m.mu.RUnlock()
	if !ok {
		mm = m.bind(name)
	}
	return mm
}

func (m *requestMetrics) observe(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	mm := m.method(info.FullMethod)
	mm.latency.Observe(time.Since(start).Seconds())
	if err == nil {
		mm.ok.Inc()
		return resp, nil
	}
	code := status.Code(err)
	mm.mu.Lock()
	c, ok := mm.codes[code]
	if !ok {
		c = m.requests.WithLabelValues(mm.name, code.String())
		mm.codes[code] = c
	}
	mm.mu.Unlock()
	c.Inc()
	return resp, err
}

// Ref refers to the Server a process builds in Start. Before Start it answers with the configured
// gRPC address. It is safe for concurrent use; the zero value is ready to use.
type Ref struct {
	mu       sync.Mutex
	s        *Server
	grpcAddr string
}

// Configure records the configured gRPC address, answered until Set.
func (r *Ref) Configure(grpcAddr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.grpcAddr = grpcAddr
}

// Set records the Server Start built.
func (r *Ref) Set(s *Server) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s = s
}

// Get returns the Server, or nil before Start.
func (r *Ref) Get() *Server {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s
}

// GRPCAddr returns the address gRPC listens on (after Start), or the configured one.
func (r *Ref) GRPCAddr() string {
	if s := r.Get(); s != nil {
		return s.GRPCAddr()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.grpcAddr
}

// HTTPAddr returns the address HTTP listens on (after Start), or "".
func (r *Ref) HTTPAddr() string {
	if s := r.Get(); s != nil {
		return s.HTTPAddr()
	}
	return ""
}

// Start builds a Server from cfg, starts it and records it.
func (r *Ref) Start(cfg Config) (*Server, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	r.Set(s)
	return s, nil
}

// RecvMsgBytes is the default transport bound for a server whose largest value is maxValue bytes:
// twice that plus 64 KiB, and at least 16 MiB. The handlers check the real limits and answer
// InvalidArgument naming them; the transport bound only caps the memory one request can take.
func RecvMsgBytes(maxValue int) int {
	return max(16<<20, 2*maxValue+64<<10)
}

// httpTLS is cfg offering HTTP/1.1 by ALPN: http.Server.Serve on a TLS listener does not speak
// HTTP/2.
func httpTLS(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	c.NextProtos = []string{"http/1.1"}
	if get := c.GetConfigForClient; get != nil {
		c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cc, err := get(hello)
			if err != nil || cc == nil {
				return cc, err
			}
			cc = cc.Clone()
			cc.NextProtos = []string{"http/1.1"}
			return cc, nil
		}
	}
	return c
}
