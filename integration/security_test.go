package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/cachewire/cachewire/client"
	"github.com/cachewire/cachewire/internal/certgen"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
	"github.com/cachewire/cachewire/redistier"
)

// tlsRedis is a redis-server serving TLS only, with ACL users: admin (everything), cw (exactly
// redistier.ACLRule for the prefix) and cw-noeval (the same without EVALSHA).
type tlsRedis struct {
	addr, caFile, prefix string
}

const (
	redisAdminPass = "admin-pass-0123456789"
	redisCWPass    = "cw-pass-0123456789"
)

func startTLSRedis(t *testing.T, dir string) *tlsRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH: the security suite needs a real Redis built with TLS")
	}
	ca, err := certgen.NewCA("redis CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(certgen.Leaf{CommonName: "redis", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	files, err := srv.WriteFiles(dir, "redis")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir, "redis-ca")
	if err != nil {
		t.Fatal(err)
	}
	r := &tlsRedis{caFile: caFile, prefix: "cwsec:"}
	rule := redistier.ACLRule(r.prefix)
	acl := []string{"user default off", "user admin on >" + redisAdminPass + " ~* &* +@all",
		"user cw on >" + redisCWPass + " " + rule, "user cw-noeval on >" + redisCWPass + " " + rule + " -evalsha"}
	aclFile := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(aclFile, []byte(strings.Join(acl, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	r.addr = "127.0.0.1:" + port
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", "0", "--tls-port", port, "--tls-cert-file", files.Cert,
		"--tls-key-file", files.Key, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
		"--dir", dir, "--aclfile", aclFile, "--protected-mode", "no")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	admin := redis.NewClient(&redis.Options{Addr: r.addr, Username: "admin", Password: redisAdminPass,
		TLSConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}})
	defer admin.Close()
	testenv.WaitFor(t, 20*time.Second, func() string {
		if err := admin.Ping(context.Background()).Err(); err != nil {
			return fmt.Sprintf("redis-server over TLS: %v\n%s", err, logs.String())
		}
		return ""
	})
	return r
}

// securePKI holds the gRPC listeners' certificates and the application's client certificate.
type securePKI struct {
	caFile        string
	node, writer  certgen.Files
	app           certgen.Files
	tokensFile    string
	opsToken      string
	clientTLS     func(t *testing.T, who certgen.Files) *tls.Config
	listenerFlags func(f certgen.Files) []string
}

func newSecurePKI(t *testing.T, dir string) *securePKI {
	t.Helper()
	ca, err := certgen.NewCA("grpc CA")
	if err != nil {
		t.Fatal(err)
	}
	p := &securePKI{}
	if p.caFile, err = ca.WriteFile(dir, "grpc-ca"); err != nil {
		t.Fatal(err)
	}
	issue := func(name string, client bool) certgen.Files {
		pair, err := ca.Issue(certgen.Leaf{CommonName: name, Hosts: []string{"127.0.0.1"}, Client: client})
		if err != nil {
			t.Fatal(err)
		}
		f, err := pair.WriteFiles(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	p.node, p.writer, p.app = issue("node", false), issue("writer", false), issue("app", true)
	p.opsToken = "ops-token-0123456789abcdef"
	p.tokensFile = filepath.Join(dir, "tokens")
	if err := os.WriteFile(p.tokensFile, []byte("ops "+p.opsToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.clientTLS = func(t *testing.T, who certgen.Files) *tls.Config {
		cfg, err := client.TLSFiles(p.caFile, who.Cert, who.Key, "")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	p.listenerFlags = func(f certgen.Files) []string {
		return []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-client-ca", p.caFile, "--tokens-file", p.tokensFile}
	}
	return p
}

// startSecureProc runs binary with args and env on free ports and waits until its HTTPS /readyz
// answers 200 to the application's client certificate.
func startSecureProc(t *testing.T, p *securePKI, binary string, env []string, args ...string) (grpcAddr string, logs *syncBuffer) {
	t.Helper()
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(filepath.Join(binDir, binary), append(args, "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--drain-delay", "0s")...)
	cmd.Env = append(os.Environ(), env...)
	logs = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s log:\n%s", binary, logs.String())
		}
	})
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: p.clientTLS(t, p.app)}}
	testenv.WaitFor(t, 60*time.Second, func() string {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited early (%v):\n%s", binary, err, logs.String())
		default:
		}
		resp, err := hc.Get("https://" + httpAddr + "/readyz")
		if err != nil {
			return err.Error()
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return "/readyz = " + strconv.Itoa(resp.StatusCode)
		}
		return ""
	})
	return grpcAddr, logs
}

// runToExit runs binary and returns its output and exit error, failing t if it runs past 40 s.
func runToExit(t *testing.T, binary string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, binary), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s did not exit within 40 s:\n%s", binary, out)
	}
	return string(out), err
}

// TestSecuredDeploymentEndToEnd runs a writer and a node against a real Kafka broker whose only
// client listener is SASL_SSL with SCRAM users and ACLs enforced (StandardAuthorizer), and a
// redis-server that speaks only TLS with an ACL user limited to the tier's key prefix and
// commands; both processes serve gRPC and HTTP over mTLS. A write through the writer reaches
// the node, the event names the calling client, only named clients may write, and a node
// started with a wrong Kafka password, an untrusted Kafka CA, a wrong Redis password or a
// Redis user denied a command exits non-zero naming the cause.
func TestSecuredDeploymentEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not on PATH: the security suite needs a real Redis built with TLS")
	}
	k := testenv.NewSecureKafka(t) // skips without CACHEWIRE_TEST_KAFKA_CLASSPATH
	dir := t.TempDir()
	rd := startTLSRedis(t, dir)
	p := newSecurePKI(t, dir)
	topic := k.CreateTopic(t, "secure-events", 3)
	group := "cwsec-l2-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	k.GrantWriter(t, topic)
	k.GrantNode(t, topic, group, topic) // WRITE on its topic too: Invalidate and Evict publish there

	writerUser, nodeUser := k.User(t, testenv.WriterUser), k.User(t, testenv.NodeUser)
	writerAddr, _ := startSecureProc(t, p, "writer", []string{"CACHEWIRE_WRITER_KAFKA_SASL_PASSWORD=" + writerUser.Password},
		append(p.listenerFlags(p.writer), "--kafka-brokers", k.Brokers[0], "--topic", topic, "--create-topic=false",
			"--db-path", filepath.Join(dir, "writer.db"), "--writer-id", "w1", "--write-clients", "app",
			"--kafka-tls-ca", k.CAFile, "--kafka-sasl-mechanism", writerUser.Mechanism, "--kafka-sasl-username", writerUser.Name)...)
	pwFile := filepath.Join(dir, "kafka-node-password")
	if err := os.WriteFile(pwFile, []byte(nodeUser.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nodeArgs := func(kafkaCA, redisUser string) []string {
		return []string{"--kafka-brokers", k.Brokers[0], "--topics", topic, "--group-id", group, "--refresh-policy", "refresh-all",
			"--kafka-tls-ca", kafkaCA, "--kafka-sasl-mechanism", nodeUser.Mechanism, "--kafka-sasl-username", nodeUser.Name,
			"--redis-addrs", rd.addr, "--redis-prefix", rd.prefix, "--redis-tls-ca", rd.caFile, "--redis-username", redisUser,
			"--log-level", "debug"}
	}
	nodeEnv := []string{"CACHEWIRE_NODE_REDIS_PASSWORD=" + redisCWPass}
	// The node's origin is the writer, over mTLS with the app's client certificate.
	originFlags := []string{"--origin", "grpc://" + writerAddr, "--origin-tls-ca", p.caFile,
		"--origin-tls-cert", p.app.Cert, "--origin-tls-key", p.app.Key}
	nodeAddr, nodeLogs := startSecureProc(t, p, "cachenode", nodeEnv,
		append(append(append(p.listenerFlags(p.node), nodeArgs(k.CAFile, "cw")...), originFlags...), "--kafka-sasl-password-file", pwFile)...)

	ctx := context.Background()
	appTLS := client.WithTLS(p.clientTLS(t, p.app))
	w, err := client.NewWriter(writerAddr, appTLS, client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := client.NewCache(nodeAddr, appTLS, client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wr, err := w.Put(ctx, "user:1", []byte("Ada"))
	if err != nil || !wr.Published {
		t.Fatalf("Put over mTLS: %+v, %v", wr, err)
	}
	testenv.WaitFor(t, 20*time.Second, func() string {
		it, err := c.Get(ctx, "user:1", client.MinVersion(wr.Version))
		if err != nil {
			return fmt.Sprintf("Get: %v", err)
		}
		if !it.Found || string(it.Value) != "Ada" || it.Version != wr.Version || it.Tier != client.TierL1 {
			return fmt.Sprintf("Get = %+v, want Ada@%d from L1 (refreshed by the event)", it, wr.Version)
		}
		return ""
	})
	// A miss loads from the writer over mTLS: found=false, not an origin error.
	if it, err := c.Get(ctx, "user:never-written"); err != nil || it.Found {
		t.Fatalf("Get of a key the writer never had: %+v, %v; want not found, loaded from the mTLS origin", it, err)
	}
	// The event carries the calling client's identity, stamped by the writer.
	rdr := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: topic, Partition: murmur2Partition("user:1", 3),
		Dialer: k.Conn(t, testenv.AdminUser).Dialer(), MaxWait: 100 * time.Millisecond})
	defer rdr.Close()
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	m, err := rdr.ReadMessage(rctx)
	if err != nil {
		t.Fatal(err)
	}
	e, err := invalidation.Decode(m.Value, invalidation.Limits{})
	if err != nil || e.Source != "w1/app" {
		t.Fatalf("event source = %q (%v), want w1/app: the writer stamps the caller", e.Source, err)
	}
	// A client named by a bearer token may read but not write: only "app" may.
	ops, err := client.NewWriter(writerAddr, client.WithTLS(p.clientTLS(t, certgen.Files{})), client.WithBearerToken(p.opsToken))
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	if _, err := ops.Put(ctx, "user:1", []byte("Mallory")); !strings.Contains(fmt.Sprint(err), "PermissionDenied") {
		t.Fatalf("ops Put: %v, want PermissionDenied", err)
	}
	if _, err := ops.Get(ctx, "user:1"); err != nil {
		t.Fatalf("ops Get: %v", err)
	}
	if !strings.Contains(nodeLogs.String(), "cache node started") {
		t.Fatalf("node log lacks its start line:\n%s", nodeLogs.String())
	}

	// Start-up refusals: each exits non-zero and names its cause.
	wrongCA := filepath.Join(dir, "grpc-ca.crt") // a CA, but not the broker's
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"a wrong Kafka password", append([]string{"CACHEWIRE_NODE_KAFKA_SASL_PASSWORD=wrong"}, nodeEnv...), nodeArgs(k.CAFile, "cw"), "SASL authentication failed"},
		{"an untrusted Kafka CA", append([]string{"CACHEWIRE_NODE_KAFKA_SASL_PASSWORD=" + nodeUser.Password}, nodeEnv...), nodeArgs(wrongCA, "cw"), "certificate is not trusted"},
		{"a wrong Redis password", []string{"CACHEWIRE_NODE_KAFKA_SASL_PASSWORD=" + nodeUser.Password, "CACHEWIRE_NODE_REDIS_PASSWORD=wrong"}, nodeArgs(k.CAFile, "cw"), "refused"},
		{"a Redis user denied EVALSHA", append([]string{"CACHEWIRE_NODE_KAFKA_SASL_PASSWORD=" + nodeUser.Password}, nodeEnv...), nodeArgs(k.CAFile, "cw-noeval"), "EVALSHA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runToExit(t, "cachenode", tc.env, append(tc.args, "--grpc-addr", freeAddr(t), "--http-addr", "-")...)
			if err == nil || !strings.Contains(strings.ToUpper(out), strings.ToUpper(tc.want)) {
				t.Fatalf("cachenode: %v; want a non-zero exit naming %q:\n%s", err, tc.want, out)
			}
		})
	}
}

// murmur2Partition is the partition of n the Murmur2 balancer puts key on.
func murmur2Partition(key string, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(key)}, parts...)
}
