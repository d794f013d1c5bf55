package node

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cachewire/cachewire/internal/certgen"
	"github.com/cachewire/cachewire/internal/testenv"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

func TestHTTPOrigin(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.EscapedPath() {
		case "/users/a%2Fb": // the key is path-escaped
			w.Header().Set(VersionHeader, "7")
			w.Write([]byte("ada"))
		case "/users/gone":
			w.Header().Set(VersionHeader, "9")
			w.WriteHeader(http.StatusNotFound)
		case "/users/never":
			w.WriteHeader(http.StatusNotFound)
		case "/users/noversion":
			w.Write([]byte("?"))
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	l, closeFn, err := OpenOrigin(srv.URL+"/users/{key}", OriginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	ctx := context.Background()
	if got, err := l.Load(ctx, "a/b"); err != nil || !got.Found || got.Version != 7 || string(got.Value) != "ada" {
		t.Errorf("found key: %+v, %v", got, err)
	}
	if got, err := l.Load(ctx, "gone"); err != nil || got.Found || got.Version != 9 {
		t.Errorf("deleted key: %+v, %v; want not found at 9", got, err)
	}
	if got, err := l.Load(ctx, "never"); err != nil || got.Found || !got.Versionless {
		t.Errorf("404 without a version: %+v, %v; want a versionless not-found", got, err)
	}
	if got, err := l.Load(ctx, "noversion"); err != nil || !got.Found || !got.Versionless || string(got.Value) != "?" {
		t.Errorf("200 without a version: %+v, %v; want a versionless value", got, err)
	}
	if _, err := l.Load(ctx, "boom"); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("HTTP 500: %v, want an origin error", err)
	}
	if _, _, err := OpenOrigin(srv.URL+"/users/", OriginOptions{}); err == nil || !strings.Contains(err.Error(), "{key}") {
		t.Errorf("URL without {key}: %v", err)
	}
}

type fakeOriginService struct {
	pb.UnimplementedOriginServiceServer
}

func (fakeOriginService) Load(_ context.Context, req *pb.LoadRequest) (*pb.LoadResponse, error) {
	switch req.GetKey() {
	case "k":
		return &pb.LoadResponse{Key: "k", Value: []byte("v"), Version: 3, Found: true}, nil
	case "unversioned":
		return &pb.LoadResponse{Key: "unversioned", Value: []byte("v"), Found: true}, nil
	}
	return &pb.LoadResponse{Key: req.GetKey(), Version: 2}, nil
}

func TestGRPCOrigin(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterOriginServiceServer(s, fakeOriginService{})
	go s.Serve(lis)
	defer s.Stop()
	l, closeFn, err := OpenOrigin("grpc://"+lis.Addr().String(), OriginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	ctx := context.Background()
	if got, err := l.Load(ctx, "k"); err != nil || !got.Found || got.Version != 3 || string(got.Value) != "v" {
		t.Errorf("Load(k) = %+v, %v", got, err)
	}
	if got, err := l.Load(ctx, "gone"); err != nil || got.Found || got.Version != 2 {
		t.Errorf("Load(gone) = %+v, %v", got, err)
	}
	if got, err := l.Load(ctx, "unversioned"); err != nil || !got.Found || !got.Versionless {
		t.Errorf("found at version 0: %+v, %v; want a versionless value", got, err)
	}
}

func TestPostgresOrigin(t *testing.T) {
	p := testenv.NewPostgres(t)
	db := p.Open(t)
	ctx := ctxT(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE users (id text PRIMARY KEY, name text NOT NULL, version bigint NOT NULL);
		INSERT INTO users VALUES ('1', 'ada', 4)`); err != nil {
		t.Fatal(err)
	}
	l, closeFn, err := OpenOrigin(p.DSN, OriginOptions{Query: `SELECT name, version FROM users WHERE id = $1`})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	if got, err := l.Load(ctx, "1"); err != nil || !got.Found || got.Version != 4 || string(got.Value) != "ada" {
		t.Errorf("Load(1) = %+v, %v", got, err)
	}
	if got, err := l.Load(ctx, "2"); err != nil || got.Found || !got.Versionless {
		t.Errorf("Load(2) = %+v, %v; want a versionless not-found (no row says when it was deleted)", got, err)
	}
	one, closeOne, err := OpenOrigin(p.DSN, OriginOptions{Query: `SELECT name FROM users WHERE id = $1`})
	if err != nil {
		t.Fatal(err)
	}
	defer closeOne()
	if got, err := one.Load(ctx, "1"); err != nil || !got.Found || !got.Versionless || string(got.Value) != "ada" {
		t.Errorf("a query without a version column: %+v, %v; want a versionless value", got, err)
	}
	three, closeThree, err := OpenOrigin(p.DSN, OriginOptions{Query: `SELECT name, version, 1 FROM users WHERE id = $1`})
	if err != nil {
		t.Fatal(err)
	}
	defer closeThree()
	if _, err := three.Load(ctx, "1"); err == nil || !strings.Contains(err.Error(), "3 columns") {
		t.Errorf("a query of three columns: %v", err)
	}
	if _, _, err := OpenOrigin(p.DSN, OriginOptions{}); err == nil || !strings.Contains(err.Error(), "--origin-query") {
		t.Errorf("postgres:// without a query: %v", err)
	}
}

// TestGRPCOriginOverMTLS: with OriginOptions.TLS a grpc:// origin serving mTLS (the writer with
// --tls-client-ca) is reached, the node presenting its client certificate; without a client
// certificate, or trusting another CA, the load fails rather than falling back to plaintext.
func TestGRPCOriginOverMTLS(t *testing.T) {
	ca, err := certgen.NewCA("origin CA")
	if err != nil {
		t.Fatal(err)
	}
	srvPair, err := ca.Issue(certgen.Leaf{CommonName: "origin", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	nodePair, err := ca.Issue(certgen.Leaf{CommonName: "node", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := srvPair.TLS()
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, err := nodePair.TLS()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{srvCert},
		ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})))
	pb.RegisterOriginServiceServer(s, fakeOriginService{})
	go s.Serve(lis)
	defer s.Stop()
	other, err := certgen.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		ok   bool
	}{
		{"trusted, with the node's certificate", &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{nodeCert}}, true},
		{"no client certificate", &tls.Config{RootCAs: ca.Pool()}, false},
		{"trusting another CA", &tls.Config{RootCAs: other.Pool(), Certificates: []tls.Certificate{nodeCert}}, false},
		{"no TLS", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, closeFn, err := OpenOrigin("grpc://"+lis.Addr().String(), OriginOptions{TLS: tc.tls})
			if err != nil {
				t.Fatal(err)
			}
			defer closeFn()
			got, err := l.Load(ctx, "k")
			if tc.ok && (err != nil || got.Version != 3) {
				t.Fatalf("Load(k) = %+v, %v; want version 3 over mTLS", got, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("Load(k) = %+v over a connection the origin should refuse", got)
			}
		})
	}
	if _, _, err := OpenOrigin("http://127.0.0.1:1/{key}", OriginOptions{TLS: &tls.Config{}}); err == nil || !strings.Contains(err.Error(), "https://") {
		t.Errorf("TLS options with an http:// origin: %v; want an error pointing to https://", err)
	}
}
