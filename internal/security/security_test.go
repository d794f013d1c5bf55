package security_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/certgen"
	"github.com/cachewire/cachewire/internal/security"
	"github.com/cachewire/cachewire/internal/serving"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// fakeCache answers Get with the caller's name as the value; key "block" waits for release.
type fakeCache struct {
	pb.UnimplementedCacheServiceServer
	blocked atomic.Int32
	release chan struct{}
	once    sync.Once
}

// open releases every blocked Get, now and later.
func (f *fakeCache) open() { f.once.Do(func() { close(f.release) }) }

func (f *fakeCache) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	if req.Key == "block" {
		f.blocked.Add(1)
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &pb.GetResponse{Key: req.Key, Found: true, Version: 1, Value: []byte(serving.ClientName(ctx))}, nil
}

func (f *fakeCache) Set(ctx context.Context, req *pb.SetRequest) (*pb.SetResponse, error) {
	return &pb.SetResponse{Accepted: true}, nil
}

type pki struct {
	dir      string
	ca       *certgen.CA
	caFile   string
	server   certgen.Files
	clients  map[string]certgen.Files
	otherCA  string
	otherCli certgen.Files
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), clients: map[string]certgen.Files{}}
	var err error
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p.ca, err = certgen.NewCA("test CA")
	must(err)
	p.caFile, err = p.ca.WriteFile(p.dir, "ca")
	must(err)
	srv, err := p.ca.Issue(certgen.Leaf{CommonName: "node", Hosts: []string{"127.0.0.1", "localhost"}})
	must(err)
	p.server, err = srv.WriteFiles(p.dir, "server")
	must(err)
	for _, name := range []string{"app-a", "app-b"} {
		c, err := p.ca.Issue(certgen.Leaf{CommonName: name, Client: true})
		must(err)
		p.clients[name], err = c.WriteFiles(p.dir, name)
		must(err)
	}
	expired, err := p.ca.Issue(certgen.Leaf{CommonName: "expired", Client: true,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	must(err)
	p.clients["expired"], err = expired.WriteFiles(p.dir, "expired")
	must(err)
	other, err := certgen.NewCA("another CA")
	must(err)
	p.otherCA, err = other.WriteFile(p.dir, "other-ca")
	must(err)
	oc, err := other.Issue(certgen.Leaf{CommonName: "intruder", Client: true})
	must(err)
	p.otherCli, err = oc.WriteFiles(p.dir, "intruder")
	must(err)
	return p
}

type server struct {
	s     *serving.Server
	fake  *fakeCache
	reg   *prometheus.Registry
	reloa *security.ServerTLS
}

func startServer(t *testing.T, flags security.ServerFlags) *server {
	t.Helper()
	st, reloader, clients, err := flags.Build(nil, "Set")
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeCache{release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	s, err := serving.New(serving.Config{Name: "test", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Registry: reg,
		TLS: st, Clients: clients, Register: func(g *grpc.Server) { pb.RegisterCacheServiceServer(g, fake) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	s.SetServing(true)
	t.Cleanup(func() { fake.open(); _ = s.Close() })
	return &server{s: s, fake: fake, reg: reg, reloa: reloader}
}

func dialCache(t *testing.T, addr string, opts ...client.Option) *client.Cache {
	t.Helper()
	c, err := client.NewCache(addr, append([]client.Option{client.WithTimeout(3 * time.Second), client.WithRetries(0, time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func tlsFiles(t *testing.T, ca string, cert certgen.Files) *tls.Config {
	t.Helper()
	cfg, err := client.TLSFiles(ca, cert.Cert, cert.Key, "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestMutualTLSRefusesWhatItCannotVerify: a listener with a client CA serves a client whose
// certificate it signed, names the caller by the certificate's CN, and refuses the handshake
// without a client certificate, with one from another CA, and with an expired one; a client
// that does not trust the server's CA refuses the server.
func TestMutualTLSRefusesWhatItCannotVerify(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, security.ServerFlags{Files: security.ServerFiles{Cert: p.server.Cert, Key: p.server.Key, ClientCA: p.caFile}})
	addr := srv.s.GRPCAddr()
	ctx := context.Background()

	it, err := dialCache(t, addr, client.WithTLS(tlsFiles(t, p.caFile, p.clients["app-a"]))).Get(ctx, "k")
	if err != nil || string(it.Value) != "app-a" {
		t.Fatalf("verified client: %v, %q; want served and named app-a", err, it.Value)
	}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		want string // the alert the server sends
	}{
		{"no client certificate", tlsFiles(t, p.caFile, certgen.Files{}), "certificate required"},
		{"a certificate from another CA", tlsFiles(t, p.caFile, p.otherCli), "unknown certificate authority"},
		{"an expired certificate", tlsFiles(t, p.caFile, p.clients["expired"]), "expired certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dialCache(t, addr, client.WithTLS(tc.cfg)).Get(ctx, "k"); !errors.Is(err, client.ErrUnavailable) {
				t.Fatalf("Get = %v; want Unavailable", err)
			}
			// Under TLS 1.3 the server refuses after the client's half of the handshake: the
			// refusal arrives as an alert on the first read.
			cfg := tc.cfg.Clone()
			cfg.NextProtos = []string{"h2"}
			conn, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("handshake: %v; want the server's alert %q", err, tc.want)
			}
		})
	}
	t.Run("a client that does not trust the server", func(t *testing.T) {
		_, err := dialCache(t, addr, client.WithTLS(tlsFiles(t, p.otherCA, p.clients["app-a"]))).Get(ctx, "k")
		if !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("Get = %v; want Unavailable naming the unknown authority", err)
		}
	})
	// Plaintext against the TLS port fails too.
	if _, err := dialCache(t, addr).Get(ctx, "k"); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("plaintext client: %v, want Unavailable", err)
	}
	// The HTTP port requires the client certificate as well.
	good := tlsFiles(t, p.caFile, p.clients["app-b"])
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: good}, Timeout: 3 * time.Second}
	resp, err := hc.Get("https://" + srv.s.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS with a client certificate: %v", err)
	}
	resp.Body.Close()
	bare := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsFiles(t, p.caFile, certgen.Files{})}, Timeout: 3 * time.Second}
	if resp, err := bare.Get("https://" + srv.s.HTTPAddr() + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("HTTPS without a client certificate was served")
	}
}

// TestCertificateRotatesWithoutRestart: replacing the certificate file makes new handshakes
// present the new certificate; a file that does not load keeps the old one serving.
func TestCertificateRotatesWithoutRestart(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, security.ServerFlags{Files: security.ServerFiles{Cert: p.server.Cert, Key: p.server.Key}})
	serial := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", srv.s.GRPCAddr(), &tls.Config{RootCAs: p.ca.Pool(), NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	// A broken file first: the old certificate keeps serving.
	if err := os.WriteFile(p.server.Cert, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the broken file to be refused", func() bool { serial(); return srv.reloa.ReloadErrors() > 0 })
	if got := serial(); got != before {
		t.Fatalf("a broken certificate file replaced the certificate: %s -> %s", before, got)
	}
	next, err := p.ca.Issue(certgen.Leaf{CommonName: "node", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.WriteFiles(p.dir, "server"); err != nil {
		t.Fatal(err)
	}
	want := next.Cert.SerialNumber.String()
	waitFor(t, 10*time.Second, "the new certificate to be served", func() bool { return serial() == want })
	if srv.reloa.Reloads() < 1 {
		t.Fatalf("Reloads = %d after a rotation", srv.reloa.Reloads())
	}
}

// TestBearerTokensNameClientsAndGuardWrites: with a tokens file, a caller without a token or
// with an unknown one is Unauthenticated, a known one is served under its name, and only
// --write-clients may call Set.
func TestBearerTokensNameClientsAndGuardWrites(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# name token\napp-a aaaaaaaaaaaaaaaaaaaa\napp-b bbbbbbbbbbbbbbbbbbbb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, security.ServerFlags{TokensFile: tokens, Writers: []string{"app-a"}})
	addr := srv.s.GRPCAddr()
	ctx := context.Background()
	if _, err := dialCache(t, addr).Get(ctx, "k"); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("no token: %v, want Unauthenticated", err)
	}
	if _, err := dialCache(t, addr, client.WithBearerToken("cccccccccccccccccccc")).Get(ctx, "k"); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("unknown token: %v, want Unauthenticated", err)
	}
	a := dialCache(t, addr, client.WithBearerToken("aaaaaaaaaaaaaaaaaaaa"))
	b := dialCache(t, addr, client.WithBearerToken("bbbbbbbbbbbbbbbbbbbb"))
	if it, err := b.Get(ctx, "k"); err != nil || string(it.Value) != "app-b" {
		t.Fatalf("app-b: %v %q", err, it.Value)
	}
	if _, err := a.Set(ctx, "k", []byte("v"), 1); err != nil {
		t.Fatalf("app-a Set: %v", err)
	}
	if _, err := b.Set(ctx, "k", []byte("v"), 1); !errors.Is(err, client.ErrPermissionDenied) || !strings.Contains(err.Error(), "app-b") {
		t.Fatalf("app-b Set: %v, want PermissionDenied naming app-b", err)
	}
	body := metrics(t, srv.s.HTTPAddr())
	for _, want := range []string{`cachewire_client_requests_total{client="app-b"} 1`, `cachewire_client_rejected_total{client="app-b",reason="forbidden"} 1`,
		`cachewire_client_rejected_total{client="",reason="unauthenticated"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestOneClientsFloodDoesNotStarveAnother: client A first holds its in-flight limit, then
// floods past its rate; A's excess requests get ResourceExhausted at once, naming the limit,
// while every request of client B is served.
func TestOneClientsFloodDoesNotStarveAnother(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("a aaaaaaaaaaaaaaaaaaaa\nb bbbbbbbbbbbbbbbbbbbb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const inFlight = 4
	srv := startServer(t, security.ServerFlags{TokensFile: tokens, Rate: 100, Burst: 200, MaxInFlight: inFlight})
	addr := srv.s.GRPCAddr()
	a := dialCache(t, addr, client.WithBearerToken("aaaaaaaaaaaaaaaaaaaa"))
	b := dialCache(t, addr, client.WithBearerToken("bbbbbbbbbbbbbbbbbbbb"))
	ctx := context.Background()
	bServed := func(n int) {
		t.Helper()
		for i := range n {
			if it, err := b.Get(ctx, fmt.Sprint("k", i)); err != nil || string(it.Value) != "b" {
				t.Fatalf("B's request %d while A is over its limits: %v", i, err)
			}
		}
	}

	// In flight: A fills its slots with requests that block.
	var wg sync.WaitGroup
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = a.Get(ctx, "block")
		}()
	}
	waitFor(t, 5*time.Second, "A's requests to be in flight", func() bool { return srv.fake.blocked.Load() == inFlight })
	if _, err := a.Get(ctx, "k"); !errors.Is(err, client.ErrResourceExhausted) || !strings.Contains(err.Error(), "in flight") {
		t.Fatalf("A past its in-flight limit: %v, want ResourceExhausted naming it", err)
	}
	bServed(20)
	srv.fake.open()
	wg.Wait()

	// Rate: A sends 600 requests against a burst of 200 and 100/s, while B keeps asking.
	var refused, served atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 150 {
				_, err := a.Get(ctx, "k")
				switch {
				case err == nil:
					served.Add(1)
				case errors.Is(err, client.ErrResourceExhausted) && strings.Contains(err.Error(), "requests/s"):
					refused.Add(1)
				default:
					t.Errorf("A: %v", err)
				}
			}
		}()
	}
	bServed(100)
	wg.Wait()
	if refused.Load() == 0 || served.Load() < 200 {
		t.Fatalf("A: %d served, %d refused; want its burst of 200 served and the rest of 600 refused past 100/s", served.Load(), refused.Load())
	}
	body := metrics(t, srv.s.HTTPAddr())
	for _, want := range []string{`cachewire_client_rejected_total{client="a",reason="in_flight"} 1`, `cachewire_client_rejected_total{client="a",reason="rate"}`,
		`cachewire_client_requests_total{client="b"} 120`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grep(body, "cachewire_client_"))
		}
	}
	if strings.Contains(body, `client="b",reason`) {
		t.Errorf("B was refused:\n%s", grep(body, "cachewire_client_"))
	}
}

func metrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
