package node

import (
	"context"
	"crypto/tls"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver, for postgres:// origins
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cachewire/cachewire/internal/tracectx"
	"github.com/cachewire/cachewire/internal/tracing"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// VersionHeader carries the version of an HTTP origin's answer.
const VersionHeader = "Cachewire-Version"

// OriginOptions tune OpenOrigin.
type OriginOptions struct {
	// Query is the SQL a postgres:// origin runs with the key as $1. It returns no row for a
	// missing key, or one row of two columns: the value (bytea or text) and its version (bigint).
	// A query of one column (the value) makes a versionless origin (see Loaded.Versionless), as
	// does no row at all: it cannot say when the key was deleted.
	Query string
	// MaxValueBytes bounds an HTTP origin's body. If zero, 1 MiB.
	MaxValueBytes int
	// HTTPClient is used by http:// origins. If nil, one with a 10 s timeout (the load's context
	// bounds it further).
	HTTPClient *http.Client
	// TLS, when set, secures a grpc:// origin (the writer or a service serving TLS or mTLS: its
	// RootCAs verify the origin, its Certificates identify the node) and an https:// origin whose
	// HTTPClient is nil. A grpc:// origin without it is dialed in plaintext.
	TLS *tls.Config
	// Tracer, when set, traces grpc:// origin calls (sending the load's trace context in
	// traceparent metadata). Every origin passes the load's trace context on: http(s):// in a
	// traceparent header. If nil, grpc:// calls carry no trace context.
	Tracer trace.TracerProvider
}

// OpenOrigin returns the Loader for an origin URL, and a function that releases it:
//
//   - grpc://host:port: OriginService (proto/cachewire/v1/origin.proto), which any service can
//     implement; the reference writer serves it.
//   - http://host:port/path/{key} (or https://): GET, {key} replaced by the path-escaped key; 200
//     is the value, with its version in the Cachewire-Version header; 404 is not found (the header,
//     if present, is the deletion's version); any other status is an origin error. An answer
//     without the header is versionless (see Loaded.Versionless).
//   - postgres://...: OriginOptions.Query, run with the key as $1, straight on the database.
//
// It connects lazily.
func OpenOrigin(raw string, o OriginOptions) (Loader, func() error, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("node: origin %q: %w", raw, err)
	}
	if o.MaxValueBytes == 0 {
		o.MaxValueBytes = 1 << 20
	}
	switch u.Scheme {
	case "grpc":
		if u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, nil, fmt.Errorf("node: origin %q: want grpc://host:port", raw)
		}
		creds := insecure.NewCredentials()
		if o.TLS != nil {
			creds = credentials.NewTLS(o.TLS.Clone())
		}
		opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
		if o.Tracer != nil {
			opts = append(opts, tracing.DialOption(o.Tracer))
		}
		conn, err := grpc.NewClient(u.Host, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("node: origin %q: %w", raw, err)
		}
		return &grpcOrigin{client: pb.NewOriginServiceClient(conn)}, conn.Close, nil
	case "http", "https":
		if !strings.Contains(raw, "{key}") {
			return nil, nil, fmt.Errorf("node: origin %q: the URL must contain {key}, where the key goes", raw)
		}
		if u.Scheme == "http" && o.TLS != nil {
			return nil, nil, fmt.Errorf("node: origin %q: TLS options are set for a plaintext http:// origin: use https://", raw)
		}
		c := o.HTTPClient
		if c == nil {
			c = &http.Client{Timeout: 10 * time.Second}
			if o.TLS != nil {
				tr := http.DefaultTransport.(*http.Transport).Clone()
				tr.TLSClientConfig = o.TLS.Clone()
				c.Transport = tr
			}
		}
		return &httpOrigin{url: raw, client: c, max: o.MaxValueBytes}, func() error { c.CloseIdleConnections(); return nil }, nil
	case "postgres", "postgresql":
		if o.Query == "" {
			return nil, nil, fmt.Errorf("node: origin %s: a postgres:// origin needs a query (--origin-query), e.g. SELECT value, version FROM users WHERE id = $1", u.Redacted())
		}
		db, err := sql.Open("pgx", raw)
		if err != nil {
			return nil, nil, fmt.Errorf("node: origin %s: %w", u.Redacted(), err)
		}
		return &sqlOrigin{db: db, query: o.Query}, db.Close, nil
	}
	return nil, nil, fmt.Errorf("node: origin %q: unknown scheme %q (want grpc://, http://, https:// or postgres://)", raw, u.Scheme)
}

type grpcOrigin struct{ client pb.OriginServiceClient }

func (g *grpcOrigin) Load(ctx context.Context, key string) (Loaded, error) {
	resp, err := g.client.Load(ctx, &pb.LoadRequest{Key: key})
	if err != nil {
		return Loaded{}, err
	}
	if resp.GetVersion() == 0 {
		// Version 0 is "unknown" (origin.proto): found, or not found without saying when the
		// key was deleted.
		return Loaded{Value: resp.GetValue(), Found: resp.GetFound(), Versionless: true}, nil
	}
	return Loaded{Value: resp.GetValue(), Version: resp.GetVersion(), Found: resp.GetFound()}, nil
}

type httpOrigin struct {
	url    string
	client *http.Client
	max    int
}

func (h *httpOrigin) Load(ctx context.Context, key string) (Loaded, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.ReplaceAll(h.url, "{key}", url.PathEscape(key)), nil)
	if err != nil {
		return Loaded{}, err
	}
	tracectx.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := h.client.Do(req)
	if err != nil {
		return Loaded{}, err
	}
	defer resp.Body.Close()
	version, versionless := uint64(0), true
	if v := resp.Header.Get(VersionHeader); v != "" {
		versionless = false
		if version, err = strconv.ParseUint(v, 10, 64); err != nil {
			return Loaded{}, fmt.Errorf("origin %s for %q: %s header %q is not a version", req.URL.Host, key, VersionHeader, v)
		}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		body, err := io.ReadAll(io.LimitReader(resp.Body, int64(h.max)+1))
		if err != nil {
			return Loaded{}, fmt.Errorf("origin %s for %q: %w", req.URL.Host, key, err)
		}
		if len(body) > h.max {
			return Loaded{}, fmt.Errorf("origin %s for %q: the value is larger than %d bytes", req.URL.Host, key, h.max)
		}
		return Loaded{Value: body, Version: version, Found: true, Versionless: versionless || version == 0}, nil
	case http.StatusNotFound:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return Loaded{Version: version, Versionless: versionless}, nil
	}
	return Loaded{}, fmt.Errorf("origin %s for %q: HTTP %s", req.URL.Host, key, resp.Status)
}

type sqlOrigin struct {
	db    *sql.DB
	query string
}

func (s *sqlOrigin) Load(ctx context.Context, key string) (Loaded, error) {
	rows, err := s.db.QueryContext(ctx, s.query, key)
	if err != nil {
		return Loaded{}, fmt.Errorf("origin query: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return Loaded{}, fmt.Errorf("origin query: %w", err)
	}
	if len(cols) != 1 && len(cols) != 2 {
		return Loaded{}, fmt.Errorf("origin query returns %d columns %v; want the value and its version, or the value alone (versionless)", len(cols), cols)
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Loaded{}, fmt.Errorf("origin query: %w", err)
		}
		return Loaded{Versionless: true}, nil // no row: not found, deleted at a version it cannot say
	}
	var value []byte
	var version sql.NullInt64
	dest := []any{&value}
	if len(cols) == 2 {
		dest = append(dest, &version)
	}
	if err := rows.Scan(dest...); err != nil {
		return Loaded{}, fmt.Errorf("origin query: %w", err)
	}
	if version.Valid && version.Int64 < 0 {
		return Loaded{}, fmt.Errorf("origin query gave version %d for %q; versions are not negative", version.Int64, key)
	}
	if value == nil {
		value = []byte{}
	}
	return Loaded{Value: value, Version: uint64(version.Int64), Found: true, Versionless: version.Int64 == 0}, rows.Err()
}
