package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/cachewire/cachewire/internal/certgen"
	"github.com/cachewire/cachewire/invalidation"
)

// EnvKafkaClasspath names the Java classpath (a glob such as /root/.cache/cachewire/kafka-4.1.1-x/*)
// of the Apache Kafka broker jars. NewSecureKafka skips its test when it is unset; .ci/run sets it
// to the output of `scripts/kafka.sh classpath`.
const EnvKafkaClasspath = "CACHEWIRE_TEST_KAFKA_CLASSPATH"

// SASL mechanism names, as Kafka and User.Mechanism spell them.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// The users every SecureKafka has. AdminUser is the broker's super user (and its inter-broker
// identity); NodeUser, WriterUser and PlainUser have no permission until a test grants it.
const (
	AdminUser  = "admin"     // SCRAM-SHA-512, super user
	NodeUser   = "node"      // SCRAM-SHA-512
	WriterUser = "writer"    // SCRAM-SHA-256
	PlainUser  = "plainuser" // PLAIN
)

// secureKafkaStartTimeout bounds how long NewSecureKafka waits for the broker to answer.
const secureKafkaStartTimeout = 90 * time.Second

// secureKafkaStopTimeout is how long the broker has to exit after SIGTERM before it is killed.
const secureKafkaStopTimeout = 30 * time.Second

// User is a SASL identity on a SecureKafka broker.
type User struct {
	// Name is the user name; its Kafka principal is "User:" + Name.
	Name string
	// Password is the user's password (random for each broker).
	Password string
	// Mechanism is the SASL mechanism the user is known by: MechanismPlain,
	// MechanismSCRAMSHA256 or MechanismSCRAMSHA512.
	Mechanism string
}

// Principal returns the user's Kafka principal, as ACLs name it.
func (u User) Principal() string { return "User:" + u.Name }

// SecureKafka is a real Apache Kafka broker of one test's own, started as a child JVM: a combined
// KRaft broker and controller whose only client listener is SASL_SSL (PLAIN, SCRAM-SHA-256 and
// SCRAM-SHA-512 over TLS with a throw-away CA), with ACLs enforced by StandardAuthorizer and no
// access for a principal without an ACL. The broker is stopped and its files removed when the test
// ends.
type SecureKafka struct {
	// Brokers are the bootstrap addresses (one SASL_SSL listener on 127.0.0.1).
	Brokers []string
	// CAFile is the PEM file of the CA that signed the broker's certificate.
	CAFile string
	// CA signed the broker's certificate. Tests that need an untrusted CA make their own.
	CA *certgen.CA
	// Users are the broker's SASL users by name: AdminUser, NodeUser, WriterUser and PlainUser.
	Users map[string]User
	// Dir is the broker's temporary directory (configuration, data, LogFile).
	Dir string
	// LogFile is where the broker's output goes.
	LogFile string

	cmd    *exec.Cmd
	exited chan struct{} // closed when the JVM has exited
}

// NewSecureKafka starts a SecureKafka for t and waits until it answers a metadata request from
// the admin user over SASL_SSL. It skips t unless EnvKafkaClasspath is set and java is on PATH,
// and fails t, with the end of the broker's log, if the broker does not start.
func NewSecureKafka(t testing.TB) *SecureKafka {
	t.Helper()
	classpath := os.Getenv(EnvKafkaClasspath)
	if classpath == "" {
		t.Skipf("testenv: %s is not set, so there is no Apache Kafka to run with SASL_SSL (set it to the output of `scripts/kafka.sh classpath`)", EnvKafkaClasspath)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		t.Skipf("testenv: %s is set but java (17 or newer) is not on PATH: %v", EnvKafkaClasspath, err)
	}

	dir := t.TempDir()
	k := &SecureKafka{Dir: dir, LogFile: filepath.Join(dir, "kafka.log"), exited: make(chan struct{})}
	keyPEM, chainPEM := k.writeCerts(t)
	k.Users = map[string]User{
		AdminUser:  {Name: AdminUser, Password: randomPassword(t), Mechanism: MechanismSCRAMSHA512},
		NodeUser:   {Name: NodeUser, Password: randomPassword(t), Mechanism: MechanismSCRAMSHA512},
		WriterUser: {Name: WriterUser, Password: randomPassword(t), Mechanism: MechanismSCRAMSHA256},
		PlainUser:  {Name: PlainUser, Password: randomPassword(t), Mechanism: MechanismPlain},
	}

	port, err := freePortPair()
	if err != nil {
		t.Fatalf("testenv: secure kafka: find two free loopback ports: %v", err)
	}
	k.Brokers = []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	props := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(props, []byte(k.serverProperties(port, keyPEM, chainPEM)), 0o600); err != nil {
		t.Fatalf("testenv: secure kafka: write server.properties: %v", err)
	}
	log4j := filepath.Join(dir, "log4j2.properties")
	if err := os.WriteFile(log4j, []byte(secureKafkaLog4j), 0o644); err != nil {
		t.Fatalf("testenv: secure kafka: write log4j2.properties: %v", err)
	}
	jvm := []string{"-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + log4j, "-cp", classpath}

	k.format(t, java, jvm, props)

	logf, err := os.OpenFile(k.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("testenv: secure kafka: open broker log: %v", err)
	}
	k.cmd = exec.Command(java, append(jvm, "kafka.Kafka", props)...)
	k.cmd.Dir = dir
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	if err := k.cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("testenv: secure kafka: start %s: %v", java, err)
	}
	go func() {
		_ = k.cmd.Wait()
		_ = logf.Close()
		close(k.exited)
	}()
	t.Cleanup(func() { k.stop(t) })

	if err := k.waitReady(); err != nil {
		t.Fatalf("testenv: secure kafka on %s did not become ready: %v\nlast lines of %s:\n%s",
			k.Brokers[0], err, k.LogFile, tailFile(k.LogFile, 30))
	}
	return k
}

// writeCerts makes the CA and the broker's certificate, writes CAFile, and returns the broker's
// key and certificate chain (leaf, then CA) in PEM.
func (k *SecureKafka) writeCerts(t testing.TB) (keyPEM, chainPEM []byte) {
	t.Helper()
	ca, err := certgen.NewCA("cachewire secure kafka test CA")
	if err != nil {
		t.Fatalf("testenv: secure kafka: make CA: %v", err)
	}
	leaf, err := ca.Issue(certgen.Leaf{CommonName: "kafka", Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatalf("testenv: secure kafka: issue broker certificate: %v", err)
	}
	if k.CAFile, err = ca.WriteFile(k.Dir, "ca"); err != nil {
		t.Fatalf("testenv: secure kafka: write CA file: %v", err)
	}
	if _, err := leaf.WriteFiles(k.Dir, "broker"); err != nil {
		t.Fatalf("testenv: secure kafka: write broker certificate: %v", err)
	}
	k.CA = ca
	chain := append(append([]byte{}, leaf.CertPEM...), ca.CertPEM...)
	return leaf.KeyPEM, chain
}

// serverProperties is the broker's configuration.
//
// The broker's key and chain are given inline (ssl.keystore.key, ssl.keystore.certificate.chain)
// rather than as a PEM file in ssl.keystore.location: Kafka reads a PEM keystore file only with
// ssl.key.password set, that is with an encrypted key, while the inline form takes the
// unencrypted PKCS #8 key certgen writes. The truststore (the broker is a client of itself
// between brokers) is the CA's PEM file.
func (k *SecureKafka) serverProperties(port int, keyPEM, chainPEM []byte) string {
	admin := k.Users[AdminUser]
	var plainUsers strings.Builder
	for _, u := range k.Users {
		if u.Mechanism == MechanismPlain {
			fmt.Fprintf(&plainUsers, " user_%s=%q", u.Name, u.Password)
		}
	}
	lines := []string{
		"process.roles=broker,controller",
		"node.id=1",
		fmt.Sprintf("listeners=SASL_SSL://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", port, port+1),
		fmt.Sprintf("advertised.listeners=SASL_SSL://127.0.0.1:%d", port),
		"controller.listener.names=CONTROLLER",
		"listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
		fmt.Sprintf("controller.quorum.bootstrap.servers=127.0.0.1:%d", port+1),
		"inter.broker.listener.name=SASL_SSL",
		"log.dirs=" + filepath.Join(k.Dir, "data"),

		"sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
		"sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
		// Every mechanism enabled on the listener needs a JAAS entry. The SCRAM-SHA-512 one is also
		// the broker's own login as a client of itself; the PLAIN one lists the PLAIN users.
		fmt.Sprintf("listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=%q password=%q;", admin.Name, admin.Password),
		"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
		"listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required" + plainUsers.String() + ";",

		"ssl.keystore.type=PEM",
		"ssl.keystore.key=" + propertyValue(string(keyPEM)),
		"ssl.keystore.certificate.chain=" + propertyValue(string(chainPEM)),
		"ssl.truststore.type=PEM",
		"ssl.truststore.location=" + k.CAFile,
		"ssl.endpoint.identification.algorithm=https",

		"authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"allow.everyone.if.no.acl.found=false",
		// The broker half of this node reaches the controller half over the PLAINTEXT CONTROLLER
		// listener, where it has no SASL identity and so is User:ANONYMOUS; its broker
		// registration and heartbeats need CLUSTER_ACTION on the cluster, and no ACL can be created
		// before the broker has registered. Without ANONYMOUS here Kafka 4.1.1 exits after about a
		// minute ("Received a fatal error while waiting for the controller to acknowledge that we
		// are caught up"). ANONYMOUS as a super user is acceptable only because the controller
		// listener is on loopback and a test's own; requests to the SASL_SSL listener always carry
		// a SASL identity, so they are never ANONYMOUS.
		"super.users=User:" + admin.Name + ";User:ANONYMOUS",

		"num.partitions=1",
		"offsets.topic.replication.factor=1",
		"offsets.topic.num.partitions=1",
		"transaction.state.log.replication.factor=1",
		"transaction.state.log.min.isr=1",
		"share.coordinator.state.topic.replication.factor=1",
		"share.coordinator.state.topic.min.isr=1",
		"group.initial.rebalance.delay.ms=0",
		"auto.create.topics.enable=false",
		"delete.topic.enable=true",
	}
	return strings.Join(lines, "\n") + "\n"
}

// secureKafkaLog4j keeps the broker log to warnings, errors and its start-up lines.
const secureKafkaLog4j = `status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = OUT
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = info
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
`

// propertyValue escapes s for a Java properties file: one line, newlines as \n.
func propertyValue(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", `\n`)
}

// format formats the broker's storage (a fresh single-node KRaft cluster) and creates the SCRAM
// users in the bootstrap metadata, so that they exist before the broker first listens.
func (k *SecureKafka) format(t testing.TB, java string, jvm []string, props string) {
	t.Helper()
	args := append([]string{}, jvm...)
	args = append(args, "kafka.tools.StorageTool", "format", "--standalone", "-t", clusterID(t), "-c", props)
	for _, name := range []string{AdminUser, NodeUser, WriterUser, PlainUser} {
		u := k.Users[name]
		if u.Mechanism == MechanismPlain {
			continue
		}
		args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", u.Mechanism, u.Name, u.Password))
	}
	ctx, cancel := context.WithTimeout(context.Background(), secureKafkaStartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, java, args...)
	cmd.Dir = k.Dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: secure kafka: format storage: %v\n%s", err, out)
	}
}

// waitReady polls until the admin user's metadata request over SASL_SSL succeeds, the broker
// exits, or secureKafkaStartTimeout passes.
func (k *SecureKafka) waitReady() error {
	conn, err := k.connFor(k.Users[AdminUser])
	if err != nil {
		return err
	}
	c, done := conn.Client(k.Brokers, 5*time.Second)
	defer done()
	deadline := time.Now().Add(secureKafkaStartTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-k.exited:
			return fmt.Errorf("the broker exited (%v); last metadata error: %v", k.cmd.ProcessState, last)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
		cancel()
		if err == nil && len(md.Brokers) > 0 {
			return nil
		}
		if err == nil {
			err = errors.New("metadata lists no brokers")
		}
		last = err
		select {
		case <-k.exited:
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("no metadata as %s after %v: %v", AdminUser, secureKafkaStartTimeout, last)
}

// stop SIGTERMs the broker and waits for it to exit, killing it after secureKafkaStopTimeout.
func (k *SecureKafka) stop(t testing.TB) {
	select {
	case <-k.exited:
		return
	default:
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(secureKafkaStopTimeout):
		t.Logf("testenv: secure kafka did not exit %v after SIGTERM; killing it", secureKafkaStopTimeout)
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
}

// User returns the user called name, failing t if there is none.
func (k *SecureKafka) User(t testing.TB, name string) User {
	t.Helper()
	u, ok := k.Users[name]
	if !ok {
		t.Fatalf("testenv: secure kafka has no user %q", name)
	}
	return u
}

// TLSConfig returns a TLS configuration that trusts the broker's CA.
func (k *SecureKafka) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: k.CA.Pool(), MinVersion: tls.VersionTLS12}
}

// Conn returns how the user called name connects: TLS trusting the broker's CA, and SASL with the
// user's mechanism and password. It fails t if there is no such user.
func (k *SecureKafka) Conn(t testing.TB, name string) invalidation.KafkaConn {
	t.Helper()
	return k.ConnFor(t, k.User(t, name))
}

// ConnFor returns how u connects: TLS trusting the broker's CA, and SASL with u's mechanism and
// password, which need not be the broker's (tests of a wrong password pass their own).
func (k *SecureKafka) ConnFor(t testing.TB, u User) invalidation.KafkaConn {
	t.Helper()
	c, err := k.connFor(u)
	if err != nil {
		t.Fatalf("testenv: secure kafka: %v", err)
	}
	return c
}

func (k *SecureKafka) connFor(u User) (invalidation.KafkaConn, error) {
	m, err := Mechanism(u)
	if err != nil {
		return invalidation.KafkaConn{}, err
	}
	return invalidation.KafkaConn{TLS: k.TLSConfig(), SASL: m}, nil
}

// Mechanism returns kafka-go's SASL mechanism for u.
func Mechanism(u User) (sasl.Mechanism, error) {
	switch u.Mechanism {
	case MechanismPlain:
		return plain.Mechanism{Username: u.Name, Password: u.Password}, nil
	case MechanismSCRAMSHA256:
		return scram.Mechanism(scram.SHA256, u.Name, u.Password)
	case MechanismSCRAMSHA512:
		return scram.Mechanism(scram.SHA512, u.Name, u.Password)
	}
	return nil, fmt.Errorf("user %q has unknown SASL mechanism %q", u.Name, u.Mechanism)
}

// Admin returns a kafka-go client that acts as the super user; its connections are closed when t
// ends.
func (k *SecureKafka) Admin(t testing.TB) *kafka.Client {
	t.Helper()
	c, done := k.Conn(t, AdminUser).Client(k.Brokers, 10*time.Second)
	t.Cleanup(done)
	return c
}

// CreateTopic creates, as the admin user, a topic unique to t (named as TopicName names it) with
// the given partition count, waits until every partition has a leader, and returns its name.
func (k *SecureKafka) CreateTopic(t testing.TB, base string, partitions int) string {
	t.Helper()
	if partitions <= 0 {
		partitions = 1
	}
	name := TopicName(t, base)
	c, done := k.Conn(t, AdminUser).Client(k.Brokers, 10*time.Second)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}}})
	if err == nil {
		err = resp.Errors[name]
	}
	if err != nil {
		t.Fatalf("testenv: secure kafka: create topic %q as %s: %v", name, AdminUser, err)
	}
	var last string
	for ctx.Err() == nil {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
		switch {
		case err != nil:
			last = err.Error()
		case len(md.Topics) != 1 || md.Topics[0].Error != nil:
			last = fmt.Sprintf("metadata: %+v", md.Topics)
		case len(md.Topics[0].Partitions) != partitions:
			last = fmt.Sprintf("%d of %d partitions", len(md.Topics[0].Partitions), partitions)
		default:
			last = ""
			for _, p := range md.Topics[0].Partitions {
				if p.Error != nil || p.Leader.ID < 0 || p.Leader.Host == "" {
					last = fmt.Sprintf("partition %d has no leader yet", p.ID)
				}
			}
			if last == "" {
				return name
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("testenv: secure kafka: topic %q not ready: %s", name, last)
	return ""
}

// ACL is one permission to allow: an operation on a resource (a topic, group or the cluster)
// named literally or by prefix, from any host.
type ACL struct {
	// Resource is the kind of resource: kafka.ResourceTypeTopic, ResourceTypeGroup,
	// ResourceTypeCluster or ResourceTypeTransactionalID.
	Resource kafka.ResourceType
	// Name is the resource's name or name prefix; "kafka-cluster" for the cluster.
	Name string
	// Pattern is kafka.PatternTypeLiteral or kafka.PatternTypePrefixed. If zero, literal.
	Pattern kafka.PatternType
	// Op is the operation allowed.
	Op kafka.ACLOperationType
}

// TopicACL allows op on the topic called name.
func TopicACL(name string, op kafka.ACLOperationType) ACL {
	return ACL{Resource: kafka.ResourceTypeTopic, Name: name, Pattern: kafka.PatternTypeLiteral, Op: op}
}

// TopicPrefixACL allows op on every topic whose name starts with prefix.
func TopicPrefixACL(prefix string, op kafka.ACLOperationType) ACL {
	return ACL{Resource: kafka.ResourceTypeTopic, Name: prefix, Pattern: kafka.PatternTypePrefixed, Op: op}
}

// GroupPrefixACL allows op on every consumer group whose id starts with prefix.
func GroupPrefixACL(prefix string, op kafka.ACLOperationType) ACL {
	return ACL{Resource: kafka.ResourceTypeGroup, Name: prefix, Pattern: kafka.PatternTypePrefixed, Op: op}
}

// Allow creates, as the admin user, ACLs that allow principal ("User:NAME", or just a user name)
// each of acls, and waits until the broker's authorizer lists all of them, so that the next
// request is already judged by them.
func (k *SecureKafka) Allow(t testing.TB, principal string, acls ...ACL) {
	t.Helper()
	if len(acls) == 0 {
		return
	}
	if !strings.Contains(principal, ":") {
		principal = "User:" + principal
	}
	entries := make([]kafka.ACLEntry, len(acls))
	for i, a := range acls {
		if a.Pattern == 0 {
			a.Pattern = kafka.PatternTypeLiteral
		}
		if a.Resource == kafka.ResourceTypeCluster && a.Name == "" {
			a.Name = "kafka-cluster"
		}
		entries[i] = kafka.ACLEntry{ResourceType: a.Resource, ResourceName: a.Name, ResourcePatternType: a.Pattern,
			Principal: principal, Host: "*", Operation: a.Op, PermissionType: kafka.ACLPermissionTypeAllow}
	}
	c, done := k.Conn(t, AdminUser).Client(k.Brokers, 10*time.Second)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.CreateACLs(ctx, &kafka.CreateACLsRequest{ACLs: entries})
	if err == nil {
		err = errors.Join(resp.Errors...)
	}
	if err != nil {
		t.Fatalf("testenv: secure kafka: create ACLs for %s: %v", principal, err)
	}
	var missing string
	for ctx.Err() == nil {
		missing = k.missingACLs(ctx, c, principal, entries)
		if missing == "" {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("testenv: secure kafka: ACLs for %s created but the broker does not list them: %s", principal, missing)
}

// missingACLs describes the first of want the broker does not list, or returns "".
func (k *SecureKafka) missingACLs(ctx context.Context, c *kafka.Client, principal string, want []kafka.ACLEntry) string {
	resp, err := c.DescribeACLs(ctx, &kafka.DescribeACLsRequest{Filter: kafka.ACLFilter{
		ResourceTypeFilter: kafka.ResourceTypeAny, ResourcePatternTypeFilter: kafka.PatternTypeAny,
		PrincipalFilter: principal, Operation: kafka.ACLOperationTypeAny, PermissionType: kafka.ACLPermissionTypeAny}})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		return "describe ACLs: " + err.Error()
	}
	for _, w := range want {
		found := false
		for _, r := range resp.Resources {
			if r.ResourceType != w.ResourceType || r.ResourceName != w.ResourceName || r.PatternType != w.ResourcePatternType {
				continue
			}
			for _, d := range r.ACLs {
				if d.Principal == w.Principal && d.Operation == w.Operation && d.PermissionType == w.PermissionType {
					found = true
				}
			}
		}
		if !found {
			return fmt.Sprintf("%v %v on %v %q (%v)", w.PermissionType, w.Operation, w.ResourceType, w.ResourceName, w.ResourcePatternType)
		}
	}
	return ""
}

// GrantNode allows NodeUser what a cache node needs: READ and DESCRIBE on every topic whose name
// starts with topicPrefix, READ (which implies DESCRIBE) on every consumer group whose id starts
// with groupPrefix, and, since a node's Invalidate and Evict RPCs publish, WRITE on each of
// writeTopics (none unless the test asks).
func (k *SecureKafka) GrantNode(t testing.TB, topicPrefix, groupPrefix string, writeTopics ...string) {
	t.Helper()
	acls := []ACL{
		TopicPrefixACL(topicPrefix, kafka.ACLOperationTypeRead),
		TopicPrefixACL(topicPrefix, kafka.ACLOperationTypeDescribe),
		GroupPrefixACL(groupPrefix, kafka.ACLOperationTypeRead),
	}
	for _, topic := range writeTopics {
		acls = append(acls, TopicACL(topic, kafka.ACLOperationTypeWrite))
	}
	k.Allow(t, "User:"+NodeUser, acls...)
}

// GrantWriter allows WriterUser to publish to topic: WRITE and DESCRIBE on it. kafka-go's writer
// is not idempotent (it never asks for a producer id), so it needs no IdempotentWrite on the
// cluster.
func (k *SecureKafka) GrantWriter(t testing.TB, topic string) {
	t.Helper()
	k.Allow(t, "User:"+WriterUser,
		TopicACL(topic, kafka.ACLOperationTypeWrite),
		TopicACL(topic, kafka.ACLOperationTypeDescribe))
}

// freePortPair returns a port P such that P and P+1 were both free on 127.0.0.1.
func freePortPair() (int, error) {
	var last error
	for range 50 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l1.Addr().(*net.TCPAddr).Port
		if p >= 65535 {
			_ = l1.Close()
			continue
		}
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		_ = l1.Close()
		if err != nil {
			last = err
			continue
		}
		_ = l2.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free pair of adjacent ports in 50 tries: %v", last)
}

// clusterID returns a random KRaft cluster id: 16 bytes, URL-safe base64 without padding.
//
// An id that starts with '-' is drawn again, as Kafka's own Uuid.randomUuid does: the storage
// tool's argument parser takes "-t -xyz" for a missing value followed by an option, so one such
// id in 64 failed the format step (and the test) at random.
func clusterID(t testing.TB) string {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			t.Fatalf("testenv: secure kafka: cluster id: %v", err)
		}
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id
		}
	}
}

func randomPassword(t testing.TB) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testenv: secure kafka: password: %v", err)
	}
	return hex.EncodeToString(b[:])
}

// tailFile returns the last n lines of the file at path, or why it cannot.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
