// Package security holds what every cachewire binary needs to encrypt and authenticate its
// connections: TLS for its listeners (certificates reloaded when their files change, and an
// optional client CA for mTLS), TLS for its clients, SASL for Kafka, and the flags that set
// them, so that cachenode, writer, relay and cachectl spell each setting the same way.
//
//	st, err := security.NewServerTLS(security.ServerFiles{Cert: "node.crt", Key: "node.key", ClientCA: "ca.crt"}, log)
//	cfg := st.Config() // for serving.Config.TLS, grpc credentials.NewTLS or an http.Server
//	defer st.Close()
//
// Passwords never come from flag values: see flagenv.Secret.
package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ServerFiles names a listener's certificate, key and, for mTLS, the CA that client
// certificates must chain to.
type ServerFiles struct {
	// Cert and Key are PEM files. Both or neither.
	Cert, Key string
	// ClientCA, when set, makes the listener require a client certificate signed by this CA.
	ClientCA string
	// ClientCertOptional verifies a client certificate when one is given but lets a client
	// without one finish the handshake: for servers that also take bearer tokens, where the
	// gRPC layer then requires one or the other.
	ClientCertOptional bool
}

// Enabled reports whether TLS is configured.
func (f ServerFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.ClientCA != "" }

func (f ServerFiles) validate() error {
	switch {
	case f.Cert == "" && f.Key == "" && f.ClientCA != "":
		return errors.New("security: a client CA needs the listener's own certificate and key (--tls-cert, --tls-key)")
	case (f.Cert == "") != (f.Key == ""):
		return errors.New("security: a TLS certificate needs its key, and a key its certificate (--tls-cert, --tls-key)")
	}
	return nil
}

// reloadCheck is how often, at most, a handshake looks whether the files changed.
const reloadCheck = time.Second

// ServerTLS serves a listener's certificate and client CA, reloading them when their files
// change (checked at most once a second, at a handshake), so that a rotated certificate takes
// effect without a restart. A file that fails to load keeps the previous certificate in use and
// is logged. It is safe for concurrent use.
type ServerTLS struct {
	files ServerFiles
	log   *slog.Logger
	now   func() time.Time

	mu        sync.Mutex
	checked   time.Time
	stamps    [3]stamp
	cert      *tls.Certificate
	clientCAs *x509.CertPool
	reloads   int
	failures  int
}

type stamp struct {
	mod  time.Time
	size int64
}

// NewServerTLS loads the files; an error names the file that does not load. log, if nil,
// defaults to slog.Default().
func NewServerTLS(files ServerFiles, log *slog.Logger) (*ServerTLS, error) {
	if err := files.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	s := &ServerTLS{files: files, log: log, now: time.Now}
	if err := s.load(); err != nil {
		return nil, err
	}
	s.checked = s.now()
	return s, nil
}

func (s *ServerTLS) paths() [3]string { return [3]string{s.files.Cert, s.files.Key, s.files.ClientCA} }

func (s *ServerTLS) load() error {
	var stamps [3]stamp
	for i, p := range s.paths() {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("security: %w", err)
		}
		stamps[i] = stamp{fi.ModTime(), fi.Size()}
	}
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return fmt.Errorf("security: certificate %s with key %s: %w", s.files.Cert, s.files.Key, err)
	}
	var pool *x509.CertPool
	if s.files.ClientCA != "" {
		if pool, err = LoadPool(s.files.ClientCA); err != nil {
			return err
		}
	}
	s.cert, s.clientCAs, s.stamps = &cert, pool, stamps
	return nil
}

// maybeReload reloads when a file's modification time or size changed.
func (s *ServerTLS) maybeReload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.checked) < reloadCheck {
		return
	}
	s.checked = now
	changed := false
	for i, p := range s.paths() {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && (stamp{fi.ModTime(), fi.Size()}) != s.stamps[i] {
			changed = true
		}
	}
	if !changed {
		return
	}
	if err := s.load(); err != nil {
		s.log.Error("TLS files changed but do not load: still serving the previous certificate", "err", err)
		s.failures++
		return
	}
	s.reloads++
	s.log.Info("TLS certificate reloaded", "cert", s.files.Cert, "client_ca", s.files.ClientCA)
}

// Reloads counts the reloads that took effect.
func (s *ServerTLS) Reloads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloads
}

// ReloadErrors counts changed files that did not load (the previous certificate kept serving).
func (s *ServerTLS) ReloadErrors() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failures
}

// Config returns a tls.Config (TLS 1.2 or newer) for a listener: every handshake gets the
// current certificate and, with a client CA, requires a client certificate signed by it.
func (s *ServerTLS) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s.maybeReload()
			s.mu.Lock()
			cert, pool := s.cert, s.clientCAs
			s.mu.Unlock()
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}}
			if pool != nil {
				c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pool
				if s.files.ClientCertOptional {
					c.ClientAuth = tls.VerifyClientCertIfGiven
				}
			}
			return c, nil
		},
	}
}

// MutualTLS reports whether client certificates are required.
func (s *ServerTLS) MutualTLS() bool { return s.files.ClientCA != "" }

// LoadPool reads a PEM file of CA certificates.
func LoadPool(path string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("security: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("security: CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// ClientFiles configures a TLS client: whom to trust and, for mTLS, who it is.
type ClientFiles struct {
	// Enable turns TLS on with the system's roots when no CA is named.
	Enable bool
	// CA is a PEM file of the CAs that sign the server's certificate. If empty, the system roots.
	CA string
	// Cert and Key are the client's own certificate (mTLS). Both or neither.
	Cert, Key string
	// ServerName is the name the server's certificate must hold. If empty, the host dialed.
	ServerName string
	// Insecure skips verifying the server's certificate. For tests and first steps only.
	Insecure bool
}

// Enabled reports whether any setting turns TLS on.
func (f ClientFiles) Enabled() bool {
	return f.Enable || f.CA != "" || f.Cert != "" || f.Key != "" || f.ServerName != "" || f.Insecure
}

// Config returns the tls.Config for f, or nil when TLS is off. The client certificate is read
// again when its files change, so it too rotates without a restart.
func (f ClientFiles) Config() (*tls.Config, error) {
	if !f.Enabled() {
		return nil, nil
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("security: a client certificate needs its key, and a key its certificate")
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName, InsecureSkipVerify: f.Insecure} //nolint:gosec // opt-in, documented
	if f.CA != "" {
		pool, err := LoadPool(f.CA)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if f.Cert != "" {
		st, err := NewServerTLS(ServerFiles{Cert: f.Cert, Key: f.Key}, nil)
		if err != nil {
			return nil, err
		}
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			st.maybeReload()
			st.mu.Lock()
			defer st.mu.Unlock()
			return st.cert, nil
		}
	}
	return c, nil
}
