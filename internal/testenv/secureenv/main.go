// Command secureenv prepares the credentials the real-mode suite runs with: a CA, certificates for
// the suite's Kafka broker and redis-server, the SCRAM and Redis ACL users' passwords, and the
// Redis ACL file. scripts/kafka.sh and scripts/redis.sh read the directory when
// CACHEWIRE_KAFKA_SECURE_DIR and CACHEWIRE_REDIS_SECURE_DIR name it, and serve a SASL_SSL
// listener (ACLs enforced) and a TLS port beside their plaintext ones; the tests reach them
// through the variables the printed env file exports (see internal/testenv).
//
//	go run ./internal/testenv/secureenv DIR
//	go run ./internal/testenv/secureenv -grant BROKER    (scripts/kafka.sh, after the first start)
//
// -grant gives the Kafka test user its ACLs through BROKER's PLAINTEXT listener (where
// User:ANONYMOUS is a super user): every topic, group and transactional id, and the cluster (to
// create topics). The authorizer still refuses anything without an ACL.
//
// It is a test tool: .ci/run runs it once per run, into the run's own state directory.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/internal/certgen"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/redistier"
)

// The users of the suite's servers. The Kafka test user's ACLs are granted by scripts/kafka.sh;
// the Redis test user may run exactly the tier's commands, on the key prefixes the suite's
// tests, checker and bench write under.
const (
	kafkaUser = "cwtest"
	redisUser = "cwtest"
)

// redisPrefixes are the key prefixes of every Redis tier the real-mode suite builds: testenv's
// per-test prefix, the checker's, the embedded cluster's default and the bench's.
var redisPrefixes = []string{"cwtest:", "cwcheck:", "cw:", "cwbench-"}

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "-grant":
		err = grant(os.Args[2])
	case len(os.Args) == 2 && !strings.HasPrefix(os.Args[1], "-"):
		err = run(os.Args[1])
	default:
		fmt.Fprintln(os.Stderr, "usage: go run ./internal/testenv/secureenv DIR | -grant BROKER")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "secureenv:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := certgen.NewCA("cachewire test suite CA")
	if err != nil {
		return err
	}
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		return err
	}
	for _, name := range []string{"kafka", "redis"} {
		leaf, err := ca.Issue(certgen.Leaf{CommonName: name, Hosts: []string{"127.0.0.1", "localhost"}})
		if err != nil {
			return err
		}
		if _, err := leaf.WriteFiles(dir, name); err != nil {
			return err
		}
	}
	pw := map[string]string{}
	for _, name := range []string{"kafka-test", "redis-test"} {
		if pw[name], err = password(); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".password"), []byte(pw[name]), 0o600); err != nil {
			return err
		}
	}
	// The default user stays open (no password, every command) so that the plaintext port keeps
	// serving the tools that know nothing of TLS (redis.sh's own PING, the Python client check)
	// and the tests' own inspection clients; every tier the tests build logs in as the ACL user.
	var rule strings.Builder
	for i, p := range redisPrefixes {
		r := redistier.ACLRule(p)
		if i > 0 { // ACLRule is "~PREFIX* resetchannels -@all +cmd...": keep only the key pattern
			r, _, _ = strings.Cut(r, " ")
		}
		rule.WriteString(" " + r)
	}
	acl := fmt.Sprintf("user default on nopass ~* &* +@all\nuser %s on >%s%s\n", redisUser, pw["redis-test"], keyPatternsFirst(rule.String()))
	if err := os.WriteFile(filepath.Join(dir, "users.acl"), []byte(acl), 0o600); err != nil {
		return err
	}
	env := []string{
		"export CACHEWIRE_TEST_KAFKA_TLS_CA=" + caFile,
		"export CACHEWIRE_TEST_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
		"export CACHEWIRE_TEST_KAFKA_SASL_USERNAME=" + kafkaUser,
		"export CACHEWIRE_TEST_KAFKA_SASL_PASSWORD=" + pw["kafka-test"],
		"export CACHEWIRE_TEST_REDIS_TLS_CA=" + caFile,
		"export CACHEWIRE_TEST_REDIS_USERNAME=" + redisUser,
		"export CACHEWIRE_TEST_REDIS_PASSWORD=" + pw["redis-test"],
	}
	if err := os.WriteFile(filepath.Join(dir, "env.sh"), []byte(strings.Join(env, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Printf("secureenv: CA, kafka and redis certificates, user %s (Kafka SCRAM-SHA-512) and %s (Redis ACL) in %s\n",
		kafkaUser, redisUser, dir)
	return nil
}

// keyPatternsFirst moves the extra key patterns (appended after the first rule) in front of the
// first rule's "resetchannels -@all +...", which Redis reads left to right either way; it only
// keeps the ACL line readable: patterns, then channels, then commands.
func keyPatternsFirst(rule string) string {
	fields := strings.Fields(rule)
	var keys, rest []string
	for _, f := range fields {
		if strings.HasPrefix(f, "~") {
			keys = append(keys, f)
		} else {
			rest = append(rest, f)
		}
	}
	return " " + strings.Join(append(keys, rest...), " ")
}

// grant creates the test user's ACLs on broker and waits until the broker lists them.
func grant(broker string) error {
	principal := "User:" + kafkaUser
	var entries []kafka.ACLEntry
	for _, r := range []struct {
		typ  kafka.ResourceType
		name string
	}{{kafka.ResourceTypeTopic, "*"}, {kafka.ResourceTypeGroup, "*"}, {kafka.ResourceTypeTransactionalID, "*"},
		{kafka.ResourceTypeCluster, "kafka-cluster"}} {
		entries = append(entries, kafka.ACLEntry{ResourceType: r.typ, ResourceName: r.name,
			ResourcePatternType: kafka.PatternTypeLiteral, Principal: principal, Host: "*",
			Operation: kafka.ACLOperationTypeAll, PermissionType: kafka.ACLPermissionTypeAllow})
	}
	c, done := invalidation.KafkaConn{}.Client([]string{broker}, 10*time.Second)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := c.CreateACLs(ctx, &kafka.CreateACLsRequest{ACLs: entries})
	if err == nil {
		err = errors.Join(resp.Errors...)
	}
	if err != nil {
		return fmt.Errorf("create ACLs for %s on %s: %w", principal, broker, err)
	}
	for {
		d, err := c.DescribeACLs(ctx, &kafka.DescribeACLsRequest{Filter: kafka.ACLFilter{
			ResourceTypeFilter: kafka.ResourceTypeAny, ResourcePatternTypeFilter: kafka.PatternTypeAny,
			PrincipalFilter: principal, Operation: kafka.ACLOperationTypeAny, PermissionType: kafka.ACLPermissionTypeAny}})
		n := 0
		if err == nil && d.Error == nil {
			for _, r := range d.Resources {
				n += len(r.ACLs)
			}
		}
		if n >= len(entries) {
			fmt.Printf("secureenv: %s may use every topic, group and transactional id on %s\n", principal, broker)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the ACLs of %s are not listed by %s after 60 s (last error: %v)", principal, broker, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func password() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
