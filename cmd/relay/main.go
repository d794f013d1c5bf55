// Command relay publishes a service's PostgreSQL outbox (package outbox) to Kafka, for services
// in any language that insert outbox rows with plain SQL in their own transactions:
//
//	INSERT INTO cachewire_outbox (key, op, version, value) VALUES ('user:42', 'UPSERT', 7, '...');
//
//	relay --postgres-dsn postgres://app@db:5432/app --kafka-brokers kafka:9092 --topic cachewire.users
//
// Run two or more for availability: one holds the outbox's advisory lock and publishes, the
// others wait and take over within --poll-interval of its connection closing. --print-schema
// prints the table definitions for a migration tool; --apply-schema creates them at start.
// Every flag can also be set through the environment: --postgres-dsn as
// CACHEWIRE_RELAY_POSTGRES_DSN. /metrics and /healthz are served on --http-addr. SIGINT or
// SIGTERM stops it; rows not yet published stay in the outbox.
package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/internal/security"
	"github.com/cachewire/cachewire/internal/telemetry"
	"github.com/cachewire/cachewire/outbox"
)

var env = flagenv.Command{Prefix: "CACHEWIRE_RELAY_"}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

type options struct {
	cfg         outbox.RelayConfig
	brokers     flagenv.List
	kafka       *security.KafkaFlags
	tlsFiles    security.ServerFiles
	httpAddr    string
	apply       bool
	printSchema bool
	check       bool
	logFormat   string
	logLevel    string
}

func parseFlags(args []string, getenv func(string) string, out io.Writer) (*options, *flagenv.Command, error) {
	o := &options{}
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.cfg.DSN, "postgres-dsn", "", "PostgreSQL connection string of the database holding cachewire_outbox (required; prefer the environment variable, it may hold a password)")
	fs.Var(&o.brokers, "kafka-brokers", "Kafka bootstrap addresses, comma separated (required)")
	fs.StringVar(&o.cfg.Topic, "topic", "cachewire.events", "existing topic the change events go to")
	fs.StringVar(&o.cfg.DeadLetterTopic, "dead-letter-topic", "", "topic for rows that can never be published, as JSON with the error (default: TOPIC.dead, created with one partition if missing); they are also kept in cachewire_outbox_dead")
	fs.StringVar(&o.cfg.Source, "source", "outbox-relay", "source name on published events")
	fs.IntVar(&o.cfg.Batch, "batch", 500, "most rows published at once")
	fs.DurationVar(&o.cfg.PollInterval, "poll-interval", time.Second, "how often to look for rows without a notification, and how often a standby tries to take over")
	fs.Int64Var(&o.cfg.LockKey, "lock-key", 0, "advisory lock shared by the relays of one outbox (default: a hash of the schema's name)")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:9095", "HTTP listen address for /metrics and /healthz (\"-\" disables)")
	fs.BoolVar(&o.apply, "apply-schema", false, "create the outbox tables and trigger at start when missing")
	fs.BoolVar(&o.printSchema, "print-schema", false, "print the outbox's SQL schema and exit")
	fs.BoolVar(&o.check, "check-config", false, "validate the flags, then exit (0 when valid) without connecting")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	e := env
	o.kafka = security.RegisterKafka(fs, &e)
	fs.StringVar(&o.tlsFiles.Cert, "tls-cert", "", "PEM certificate of the HTTP listener (with --tls-key); reloaded when the file changes. Empty: plaintext")
	fs.StringVar(&o.tlsFiles.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&o.tlsFiles.ClientCA, "tls-client-ca", "", "PEM CA file: the HTTP listener requires and verifies client certificates signed by it (mTLS)")
	if err := e.Parse(fs, args, getenv); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	o.cfg.Brokers = o.brokers
	if o.printSchema {
		return o, &e, nil
	}
	var chk flagenv.Check
	chk.Addr("http-addr", o.httpAddr, true)
	chk.Addrs("kafka-brokers", o.brokers)
	chk.Positive("poll-interval", o.cfg.PollInterval)
	chk.Size("batch", int64(o.cfg.Batch), 1)
	if err := chk.Err(); err != nil {
		return nil, nil, err
	}
	var err error
	if o.cfg.Kafka, err = o.kafka.Conn(); err != nil {
		return nil, nil, fmt.Errorf("kafka: %w", err)
	}
	return o, &e, nil
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, e, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		flagenv.PrintError(stderr, "relay", err)
		return 2
	}
	if o.printSchema {
		fmt.Fprint(stdout, outbox.Schema())
		return 0
	}
	log, err := flagenv.Logger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		flagenv.PrintError(stderr, "relay", err)
		return 2
	}
	e.LogWarnings(log)
	o.cfg.Logger = log
	reg := prometheus.NewRegistry()
	o.cfg.Registerer = reg
	tracing, err := telemetry.Setup(context.Background(), "cachewire-relay", o.cfg.Source)
	if err != nil {
		flagenv.PrintError(stderr, "relay", err)
		return 2
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(ctx); err != nil {
			log.Warn("tracing: spans not exported at exit", "err", err)
		}
	}()
	o.cfg.Tracer = tracing.Provider()
	r, err := outbox.NewRelay(o.cfg)
	if err != nil {
		flagenv.PrintError(stderr, "relay", err)
		return 2
	}
	var serverTLS *security.ServerTLS
	if o.tlsFiles.Enabled() {
		if serverTLS, err = security.NewServerTLS(o.tlsFiles, log); err != nil {
			flagenv.PrintError(stderr, "relay", err)
			return 2
		}
	}
	if o.check {
		fmt.Fprintln(stderr, "relay: configuration OK")
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.apply {
		if err := applySchema(ctx, o.cfg.DSN); err != nil {
			log.Error("cannot apply the schema", "err", err)
			return 1
		}
	}
	if o.httpAddr != "-" {
		lis, err := net.Listen("tcp", o.httpAddr)
		if err != nil {
			log.Error("cannot listen", "addr", o.httpAddr, "err", err)
			return 1
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		if serverTLS != nil {
			cfg := serverTLS.Config()
			cfg.NextProtos = []string{"http/1.1"}
			lis = tls.NewListener(lis, cfg)
		}
		go func() { _ = srv.Serve(lis) }()
		defer srv.Close()
		log.Info("serving /metrics and /healthz", "addr", lis.Addr().String())
	}
	tracing.Log(log)
	log.Info("relay starting", "topic", o.cfg.Topic)
	if err := r.Run(ctx); err != nil {
		log.Error("relay stopped", "err", err)
		return 1
	}
	log.Info("signal received: stopped; unpublished rows stay in the outbox")
	return 0
}

func applySchema(ctx context.Context, dsn string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return outbox.Apply(actx, db)
}
