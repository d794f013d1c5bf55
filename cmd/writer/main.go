// Command writer is cachewire's reference writer: a system of record (bbolt) with a
// transactional outbox that publishes a versioned change event to Kafka for every committed
// Put and Delete, and serves WriterService (the origin read API cache nodes load from).
//
//	writer --kafka-brokers 127.0.0.1:9092 --topic cachewire.users --db-path ./writer.db --create-topic
//
// Every flag can also be set through the environment: --kafka-brokers as CACHEWIRE_WRITER_KAFKA_BROKERS.
// SIGINT or SIGTERM drains requests in flight, gives the relay until --shutdown-timeout to publish
// the outbox (the next start publishes what is left), and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/internal/security"
	"github.com/cachewire/cachewire/internal/telemetry"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/writer"
)

// env is how the flags are read from the environment: CACHEWIRE_WRITER_GRPC_ADDR for
// --grpc-addr; the unprefixed CACHEWIRE_GRPC_ADDR of earlier releases still works, with a warning.
var env = flagenv.Command{Prefix: "CACHEWIRE_WRITER_", Legacy: "CACHEWIRE_"}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

type options struct {
	cfg       writer.Config
	brokers   flagenv.List
	logFormat string
	logLevel  string
	check     bool
	env       flagenv.Command
	server    *security.ServerFlags
	kafka     *security.KafkaFlags
}

func parseFlags(args []string, getenv func(string) string, out io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("writer", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.WriterID, "writer-id", "", "source name on published events (default: the host name)")
	fs.StringVar(&c.DBPath, "db-path", "cachewire-writer.db", "bbolt file holding records and the outbox")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:7080", "gRPC listen address (WriterService, health, reflection)")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:9091", "HTTP listen address for /healthz, /readyz, /metrics (\"-\" disables)")
	fs.Var(&o.brokers, "kafka-brokers", "Kafka bootstrap addresses, comma separated (required)")
	fs.StringVar(&c.Topic, "topic", "cachewire.events", "topic the change events go to")
	fs.BoolVar(&c.CreateTopic, "create-topic", true, "create the topic at start-up when it is missing (otherwise start-up fails)")
	fs.IntVar(&c.TopicPartitions, "topic-partitions", 3, "partitions of a topic this writer creates")
	fs.IntVar(&c.TopicReplication, "topic-replication", 1, "replication factor of a topic this writer creates")
	fs.IntVar(&c.EventValueMax, "event-value-max", 64<<10, "largest value an UPSERT event carries; larger ones are published as INVALIDATE")
	fs.IntVar(&c.RelayBatch, "relay-batch", 500, "most outbox rows published at once")
	fs.StringVar(&c.DeadLetterTopic, "dead-letter-topic", "", "existing topic that receives the raw bytes of outbox rows that can never be published; empty: they are kept in the outbox_dead bucket of --db-path")
	fs.DurationVar(&c.WaitTimeout, "wait-published-timeout", 5*time.Second, "bound on waiting for Kafka's ack when a write asks for wait_published")
	fs.IntVar(&c.Limits.MaxKeyBytes, "max-key-bytes", invalidation.DefaultMaxKeyBytes, "longest key accepted")
	fs.IntVar(&c.Limits.MaxValueBytes, "max-value-bytes", invalidation.DefaultMaxValueBytes, "largest value accepted")
	fs.IntVar(&c.MaxBatch, "max-batch", 100, "most keys in one BatchGet")
	fs.IntVar(&c.MaxRecvMsgBytes, "max-recv-msg-bytes", 0, "largest gRPC request the transport reads (default: 2 × max-value-bytes + 64 KiB, at least 16 MiB); larger values within it are refused as invalid by the limits above")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "bound on draining at SIGTERM")
	fs.DurationVar(&c.DrainDelay, "drain-delay", 5*time.Second, "at SIGTERM, report NOT_SERVING this long while still serving, before draining (longer than the readiness probe's period)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.check, "check-config", false, "validate the flags and configuration, then exit (0 when valid) without opening anything")
	o.env = env
	o.kafka = security.RegisterKafka(fs, &o.env)
	o.server = security.RegisterServer(fs, "Put and Delete")
	if err := o.env.Parse(fs, args, getenv); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.Brokers = o.brokers
	var chk flagenv.Check
	chk.Addr("grpc-addr", c.GRPCAddr, false)
	chk.Addr("http-addr", c.HTTPAddr, true)
	chk.Addrs("kafka-brokers", o.brokers)
	chk.Positive("wait-published-timeout", c.WaitTimeout)
	chk.Positive("shutdown-timeout", c.ShutdownTimeout)
	chk.NotNegative("drain-delay", c.DrainDelay)
	for _, n := range []struct {
		name string
		v    int
	}{{"topic-partitions", c.TopicPartitions}, {"topic-replication", c.TopicReplication}, {"event-value-max", c.EventValueMax},
		{"relay-batch", c.RelayBatch}, {"max-key-bytes", c.Limits.MaxKeyBytes}, {"max-value-bytes", c.Limits.MaxValueBytes},
		{"max-batch", c.MaxBatch}} {
		chk.Size(n.name, int64(n.v), 1)
	}
	chk.Size("max-recv-msg-bytes", int64(c.MaxRecvMsgBytes), 0)
	o.server.Check(&chk)
	if err := chk.Err(); err != nil {
		return nil, err
	}
	var err error
	if c.Kafka, err = o.kafka.Conn(); err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return o, nil
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	o, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		flagenv.PrintError(stderr, "writer", err)
		return 2
	}
	log, err := flagenv.Logger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		flagenv.PrintError(stderr, "writer", err)
		return 2
	}
	o.cfg.Logger = log
	o.env.LogWarnings(log)
	if o.cfg.TLS, _, o.cfg.Clients, err = o.server.Build(log, writer.MutatingMethods...); err != nil {
		flagenv.PrintError(stderr, "writer", err)
		return 2
	}
	tracing, err := telemetry.Setup(context.Background(), "cachewire-writer", o.cfg.WriterID)
	if err != nil {
		flagenv.PrintError(stderr, "writer", err)
		return 2
	}
	defer flushSpans(log, tracing)
	o.cfg.Tracer = tracing.Provider()
	if o.check {
		if err := writer.CheckConfig(o.cfg); err != nil {
			flagenv.PrintError(stderr, "writer", err)
			return 2
		}
		fmt.Fprintln(stderr, "writer: configuration OK")
		return 0
	}
	tracing.Log(log)
	w, err := writer.New(o.cfg)
	if err != nil {
		flagenv.PrintError(stderr, "writer", err)
		return 2
	}
	if err := w.Start(); err != nil {
		log.Error("cannot start", "err", err)
		w.Close()
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("signal received: draining")
	if err := w.Shutdown(context.Background()); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

// flushSpans exports the spans still buffered, bounded, at exit.
func flushSpans(log *slog.Logger, t *telemetry.Tracing) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn("tracing: spans not exported at exit", "err", err)
	}
}
