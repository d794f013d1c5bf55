package security

import (
	"crypto/tls"
	"flag"
	"log/slog"

	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/internal/serving"
	"github.com/cachewire/cachewire/invalidation"
)

// ServerFlags are a server's TLS, client identity and per-client limit flags, the same in
// cachenode and writer.
type ServerFlags struct {
	Files       ServerFiles
	TokensFile  string
	Rate        float64
	Burst       int
	MaxInFlight int
	Writers     flagenv.List
}

// RegisterServer defines --tls-cert, --tls-key, --tls-client-ca, --tokens-file, --client-rate,
// --client-burst, --client-max-in-flight and --write-clients on fs. mutating names the RPCs
// --write-clients restricts, for the help text.
func RegisterServer(fs *flag.FlagSet, mutating string) *ServerFlags {
	f := &ServerFlags{}
	fs.StringVar(&f.Files.Cert, "tls-cert", "", "PEM certificate of the gRPC and HTTP listeners (with --tls-key); reloaded when the file changes. Empty: plaintext")
	fs.StringVar(&f.Files.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.Files.ClientCA, "tls-client-ca", "", "PEM CA file: the listeners require and verify client certificates signed by it (mTLS); a caller is named by its certificate's subject CN")
	fs.StringVar(&f.TokensFile, "tokens-file", "", `file of "NAME TOKEN" lines: gRPC callers must send "authorization: Bearer TOKEN" (or a verified client certificate) and are named NAME in metrics and logs; with --tls-client-ca, a client certificate is then verified when given but not required at the handshake (the HTTP port too)`)
	fs.Float64Var(&f.Rate, "client-rate", 0, "requests per second each client may make (more get ResourceExhausted); 0: unlimited")
	fs.IntVar(&f.Burst, "client-burst", 0, "burst above --client-rate each client may make (default: the rate, at least 1)")
	fs.IntVar(&f.MaxInFlight, "client-max-in-flight", 0, "requests of one client that may run at once (more get ResourceExhausted); 0: unbounded")
	fs.Var(&f.Writers, "write-clients", "clients allowed to call "+mutating+", comma separated (PermissionDenied for others); empty: every client")
	return f
}

// Build returns what serving.Config takes: the listeners' TLS (nil for plaintext), the
// reloader behind it (nil for plaintext), and the clients' configuration (nil when no
// identity or limit is set). mutating are the method names --write-clients restricts.
func (f *ServerFlags) Build(log *slog.Logger, mutating ...string) (*tls.Config, *ServerTLS, *serving.ClientsConfig, error) {
	var tlsFn *tls.Config
	var st *ServerTLS
	if f.Files.Enabled() {
		var err error
		files := f.Files
		files.ClientCertOptional = f.TokensFile != "" // a token is the other way in; gRPC requires one of them
		if st, err = NewServerTLS(files, log); err != nil {
			return nil, nil, nil, err
		}
		tlsFn = st.Config()
	}
	if f.TokensFile == "" && f.Files.ClientCA == "" && f.Rate == 0 && f.MaxInFlight == 0 && len(f.Writers) == 0 {
		return tlsFn, st, nil, nil
	}
	cc := &serving.ClientsConfig{RequireIdentity: f.Files.ClientCA != "", Rate: f.Rate, Burst: f.Burst,
		MaxInFlight: f.MaxInFlight, Writers: f.Writers, Mutating: mutating}
	if f.TokensFile != "" {
		tokens, err := serving.LoadTokens(f.TokensFile)
		if err != nil {
			return nil, nil, nil, err
		}
		cc.Tokens = tokens
	}
	return tlsFn, st, cc, nil
}

// Check adds the flags' own problems to chk.
func (f *ServerFlags) Check(chk *flagenv.Check) {
	if f.Rate < 0 {
		chk.Size("client-rate", -1, 0)
	}
	chk.Size("client-burst", int64(f.Burst), 0)
	chk.Size("client-max-in-flight", int64(f.MaxInFlight), 0)
}

// KafkaFlags are a Kafka client's TLS and SASL flags, the same in every binary.
type KafkaFlags struct {
	TLS       ClientFiles
	Mechanism string
	Username  string
	Password  *flagenv.Secret
}

// RegisterKafka defines --kafka-tls, --kafka-tls-ca, --kafka-tls-cert, --kafka-tls-key,
// --kafka-tls-server-name, --kafka-sasl-mechanism, --kafka-sasl-username and the secret
// kafka-sasl-password (its variable, or --kafka-sasl-password-file).
func RegisterKafka(fs *flag.FlagSet, env *flagenv.Command) *KafkaFlags {
	k := &KafkaFlags{}
	fs.BoolVar(&k.TLS.Enable, "kafka-tls", false, "connect to Kafka over TLS (SSL or SASL_SSL listeners), trusting the system roots unless --kafka-tls-ca is set")
	fs.StringVar(&k.TLS.CA, "kafka-tls-ca", "", "PEM CA file the brokers' certificates must chain to (turns TLS on)")
	fs.StringVar(&k.TLS.Cert, "kafka-tls-cert", "", "PEM client certificate for brokers that require one (mTLS), with --kafka-tls-key")
	fs.StringVar(&k.TLS.Key, "kafka-tls-key", "", "PEM private key of --kafka-tls-cert")
	fs.StringVar(&k.TLS.ServerName, "kafka-tls-server-name", "", "name the brokers' certificates must hold (default: the host dialed)")
	fs.StringVar(&k.Mechanism, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL")
	fs.StringVar(&k.Username, "kafka-sasl-username", "", "SASL user name")
	k.Password = env.Secret(fs, "kafka-sasl-password", "SASL password")
	return k
}

// Conn returns the connection the flags describe.
func (k *KafkaFlags) Conn() (invalidation.KafkaConn, error) {
	var c invalidation.KafkaConn
	var err error
	if c.TLS, err = k.TLS.Config(); err != nil {
		return c, err
	}
	c.SASL, err = SASL(k.Mechanism, k.Username, k.Password.Value())
	return c, err
}

// RedisFlags are the Redis client's TLS flags and passwords.
type RedisFlags struct {
	TLS              ClientFiles
	Password         *flagenv.Secret
	SentinelUsername string
	SentinelPassword *flagenv.Secret
}

// RegisterRedis defines --redis-tls, --redis-tls-ca, --redis-tls-cert, --redis-tls-key,
// --redis-tls-server-name and the secret redis-password.
func RegisterRedis(fs *flag.FlagSet, env *flagenv.Command) *RedisFlags {
	r := &RedisFlags{}
	fs.BoolVar(&r.TLS.Enable, "redis-tls", false, "connect to Redis over TLS, trusting the system roots unless --redis-tls-ca is set")
	fs.StringVar(&r.TLS.CA, "redis-tls-ca", "", "PEM CA file Redis's certificate must chain to (turns TLS on)")
	fs.StringVar(&r.TLS.Cert, "redis-tls-cert", "", "PEM client certificate for a Redis that requires one (tls-auth-clients yes), with --redis-tls-key")
	fs.StringVar(&r.TLS.Key, "redis-tls-key", "", "PEM private key of --redis-tls-cert")
	fs.StringVar(&r.TLS.ServerName, "redis-tls-server-name", "", "name Redis's certificate must hold (default: the host dialed)")
	r.Password = env.Secret(fs, "redis-password", "Redis password (of --redis-username, or of the default user)")
	fs.StringVar(&r.SentinelUsername, "redis-sentinel-username", "", "ACL user name the Sentinels require (--redis-mode sentinel); empty: none")
	r.SentinelPassword = env.Secret(fs, "redis-sentinel-password", "password the Sentinels require (--redis-mode sentinel)")
	return r
}

// ClientFlags are a gRPC client's TLS flags and bearer token (cachectl, cachebench).
type ClientFlags struct {
	TLS   ClientFiles
	Token *flagenv.Secret
}

// RegisterClient defines --tls, --tls-ca, --tls-cert, --tls-key, --tls-server-name and the
// secret token (its variable, or --token-file).
func RegisterClient(fs *flag.FlagSet, env *flagenv.Command) *ClientFlags {
	c := &ClientFlags{}
	fs.BoolVar(&c.TLS.Enable, "tls", false, "connect to the node and writer over TLS, trusting the system roots unless --tls-ca is set")
	fs.StringVar(&c.TLS.CA, "tls-ca", "", "PEM CA file the servers' certificates must chain to (turns TLS on)")
	fs.StringVar(&c.TLS.Cert, "tls-cert", "", "PEM client certificate (mTLS), with --tls-key")
	fs.StringVar(&c.TLS.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLS.ServerName, "tls-server-name", "", "name the servers' certificates must hold (default: the host dialed)")
	c.Token = env.Secret(fs, "token", "bearer token sent as authorization: Bearer TOKEN")
	return c
}
