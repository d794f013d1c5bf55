// Command users is an example service that keeps its data in its own PostgreSQL and has it
// cached by cachewire with the same guarantees as the reference writer:
//
//   - PUT /users/{id} (body: the name) and DELETE /users/{id} change a row and, in the same
//     transaction, enqueue the change event (package outbox). The answer is {"key", "version"}:
//     pass the version as min_version to read your own write through any node.
//   - An outbox.Relay in the same process publishes the events to Kafka (--relay=false when
//     cmd/relay publishes them instead, as it would for a service in another language).
//   - GET /cache/{key} is the node's origin (cachenode --origin http://HOST/cache/{key}): the value
//     with its version in the Cachewire-Version header; 404, with the deletion's version, for a
//     deleted user.
//
// Versions come from one sequence shared by every row, so a user deleted and created again never
// goes back to a lower version; a delete keeps the row, marked deleted, so that its version is
// still known. Reads go to the primary: an origin must be at least as fresh as the events.
//
//	go run ./examples/users --postgres-dsn "$(scripts/postgres.sh dsn)" --kafka-brokers 127.0.0.1:9092
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/node"
	"github.com/cachewire/cachewire/outbox"
)

const schema = `
CREATE SEQUENCE IF NOT EXISTS users_version;
CREATE TABLE IF NOT EXISTS users (
    id      text    PRIMARY KEY,
    name    text    NOT NULL,
    version bigint  NOT NULL,
    deleted boolean NOT NULL DEFAULT false
);`

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("users", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("postgres-dsn", "", "the service's PostgreSQL (required)")
	var brokers flagenv.List
	fs.Var(&brokers, "kafka-brokers", "Kafka bootstrap addresses (required)")
	topic := fs.String("topic", "users.events", "topic the change events go to (created when missing)")
	httpAddr := fs.String("http-addr", "127.0.0.1:8081", "HTTP listen address of the API and the origin endpoint")
	withRelay := fs.Bool("relay", true, "run the outbox relay in this process; false when cmd/relay publishes the outbox instead (both would share one lock: one publishes, the other waits)")
	check := fs.Bool("check-config", false, "validate the flags, then exit (0 when valid) without connecting")
	env := flagenv.Command{Prefix: "USERS_"}
	if err := env.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *dsn == "" || len(brokers) == 0 {
		fmt.Fprintln(stderr, "users: --postgres-dsn and --kafka-brokers are required")
		return 2
	}
	var chk flagenv.Check
	chk.Addr("http-addr", *httpAddr, false)
	chk.Addrs("kafka-brokers", brokers)
	if err := chk.Err(); err != nil {
		flagenv.PrintError(stderr, "users", err)
		return 2
	}
	if *check {
		fmt.Fprintln(stderr, "users: configuration OK")
		return 0
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := start(ctx, *dsn, brokers, invalidation.KafkaConn{}, *topic, *httpAddr, *withRelay, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	<-ctx.Done()
	s.close()
	return 0
}

type service struct {
	db     *sql.DB
	relay  *outbox.Relay
	srv    *http.Server
	addr   string
	closed chan struct{}
}

// start applies the schema, creates the topic, and starts the HTTP server and, with withRelay,
// the relay.
func start(ctx context.Context, dsn string, brokers []string, kconn invalidation.KafkaConn, topic, httpAddr string, withRelay bool, log *slog.Logger) (*service, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("schema: %w", err)
	}
	if err := outbox.Apply(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	if err := (topics.Admin{Brokers: brokers, Conn: kconn}).Create(ctx, topics.Spec{Name: topic, Partitions: 3}); err != nil {
		db.Close()
		return nil, err
	}
	var relay *outbox.Relay
	if withRelay {
		relay, err = outbox.NewRelay(outbox.RelayConfig{DSN: dsn, Brokers: brokers, Kafka: kconn, Topic: topic, Source: "users", Logger: log,
			PollInterval: 200 * time.Millisecond})
		if err != nil {
			db.Close()
			return nil, err
		}
	}
	lis, err := net.Listen("tcp", httpAddr)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &service{db: db, relay: relay, addr: lis.Addr().String(), closed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /users/{id}", s.put)
	mux.HandleFunc("DELETE /users/{id}", s.delete)
	mux.HandleFunc("GET /cache/{key}", s.origin)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(lis) }()
	go func() {
		defer close(s.closed)
		if relay != nil {
			_ = relay.Run(context.Background())
		}
	}()
	log.Info("users service ready", "http", s.addr, "topic", topic,
		"origin", "http://"+s.addr+"/cache/{key}")
	return s, nil
}

func (s *service) close() {
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(sctx)
	if s.relay != nil {
		s.relay.Close()
	}
	<-s.closed
	s.db.Close()
}

// write runs one change and its outbox row in one transaction.
func (s *service) write(ctx context.Context, id string, name *string) (uint64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var version int64
	e := invalidation.Event{Key: "user:" + id}
	if name != nil {
		// UPDATE first: an INSERT ... ON CONFLICT would draw a version it then throws away.
		err = tx.QueryRowContext(ctx, `UPDATE users SET name = $2, version = nextval('users_version'), deleted = false
			WHERE id = $1 RETURNING version`, id, *name).Scan(&version)
		if errors.Is(err, sql.ErrNoRows) {
			err = tx.QueryRowContext(ctx, `INSERT INTO users (id, name, version) VALUES ($1, $2, nextval('users_version'))
				RETURNING version`, id, *name).Scan(&version)
		}
		e.Op, e.Value, e.HasValue = invalidation.OpUpsert, []byte(*name), true
	} else {
		err = tx.QueryRowContext(ctx, `UPDATE users SET deleted = true, version = nextval('users_version')
			WHERE id = $1 AND NOT deleted RETURNING version`, id).Scan(&version)
		e.Op = invalidation.OpDelete
	}
	if err != nil {
		return 0, err
	}
	e.Version = uint64(version)
	if err := outbox.Enqueue(ctx, tx, e); err != nil {
		return 0, err
	}
	return e.Version, tx.Commit()
}

func (s *service) put(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil || len(body) == 0 {
		http.Error(w, "the body is the user's name", http.StatusBadRequest)
		return
	}
	name := string(body)
	s.answer(w, r, &name)
}

func (s *service) delete(w http.ResponseWriter, r *http.Request) { s.answer(w, r, nil) }

func (s *service) answer(w http.ResponseWriter, r *http.Request, name *string) {
	id := r.PathValue("id")
	v, err := s.write(r.Context(), id, name)
	if errors.Is(err, sql.ErrNoRows) {
		http.Error(w, "no such user", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"key": "user:" + id, "version": v})
}

// origin answers a cache node's load of "user:<id>".
func (s *service) origin(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.PathValue("key"), "user:")
	if !ok {
		http.NotFound(w, r)
		return
	}
	var name string
	var version int64
	var deleted bool
	err := s.db.QueryRowContext(r.Context(), `SELECT name, version, deleted FROM users WHERE id = $1`, id).Scan(&name, &version, &deleted)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		http.NotFound(w, r) // never written: no version
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	case deleted:
		w.Header().Set(node.VersionHeader, strconv.FormatInt(version, 10))
		w.WriteHeader(http.StatusNotFound)
	default:
		w.Header().Set(node.VersionHeader, strconv.FormatInt(version, 10))
		_, _ = io.WriteString(w, name)
	}
}
