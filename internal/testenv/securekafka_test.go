package testenv

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestSecureKafkaSkipsWithoutClasspath checks that a test asking for a secure broker is skipped,
// not failed, on a machine without the Kafka jars.
func TestSecureKafkaSkipsWithoutClasspath(t *testing.T) {
	t.Setenv(EnvKafkaClasspath, "")
	skipped := false
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		NewSecureKafka(t)
		t.Errorf("NewSecureKafka returned without %s", EnvKafkaClasspath)
	})
	if !skipped {
		t.Fatalf("NewSecureKafka without %s did not skip the test", EnvKafkaClasspath)
	}
}

// TestSecureKafkaPropertyValue checks that a PEM block becomes one properties line whose \n
// escapes Java reads back as newlines.
func TestSecureKafkaPropertyValue(t *testing.T) {
	pem := "-----BEGIN PRIVATE KEY-----\r\nAAA+/=\nBBB\n-----END PRIVATE KEY-----\n"
	got := propertyValue(pem)
	want := `-----BEGIN PRIVATE KEY-----\nAAA+/=\nBBB\n-----END PRIVATE KEY-----\n`
	if got != want {
		t.Fatalf("propertyValue(%q) = %q, want %q", pem, got, want)
	}
	if strings.ContainsAny(got, "\r\n") {
		t.Fatalf("propertyValue left a line break in %q", got)
	}
}

// TestSecureKafkaFreePortPair checks that both ports of the pair can be listened on.
func TestSecureKafkaFreePortPair(t *testing.T) {
	p, err := freePortPair()
	if err != nil {
		t.Fatalf("freePortPair: %v", err)
	}
	for _, port := range []int{p, p + 1} {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("freePortPair returned %d, but port %d is not free: %v", p, port, err)
		}
		_ = l.Close()
	}
}

// TestSecureKafkaServerProperties checks the settings the secure broker depends on.
func TestSecureKafkaServerProperties(t *testing.T) {
	k := &SecureKafka{Dir: t.TempDir(), CAFile: "/x/ca.crt", Users: map[string]User{
		AdminUser: {Name: AdminUser, Password: "apw", Mechanism: MechanismSCRAMSHA512},
		PlainUser: {Name: PlainUser, Password: "ppw", Mechanism: MechanismPlain},
	}}
	props := k.serverProperties(40000, []byte("KEY\n"), []byte("CHAIN\n"))
	for _, want := range []string{
		"listeners=SASL_SSL://127.0.0.1:40000,CONTROLLER://127.0.0.1:40001\n",
		"listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT\n",
		"sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n",
		"sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\n",
		`ScramLoginModule required username="admin" password="apw";` + "\n",
		`PlainLoginModule required user_plainuser="ppw";` + "\n",
		"ssl.keystore.type=PEM\n",
		`ssl.keystore.key=KEY\n` + "\n",
		`ssl.keystore.certificate.chain=CHAIN\n` + "\n",
		"ssl.truststore.type=PEM\n",
		"ssl.truststore.location=/x/ca.crt\n",
		"authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n",
		"allow.everyone.if.no.acl.found=false\n",
		"super.users=User:admin;User:ANONYMOUS\n",
		"auto.create.topics.enable=false\n",
		"group.initial.rebalance.delay.ms=0\n",
	} {
		if !strings.Contains(props, want) {
			t.Errorf("server.properties lacks %q", want)
		}
	}
}

// The storage tool reads "-t -xyz" as a missing cluster id, so an id must never start with '-'.
// One random id in 64 did, before clusterID drew again; 2000 draws miss that bug with
// probability (63/64)^2000, about 2e-14.
func TestClusterIDNeverStartsWithADash(t *testing.T) {
	for range 2000 {
		id := clusterID(t)
		if len(id) != 22 || strings.HasPrefix(id, "-") {
			t.Fatalf("clusterID() = %q: want 22 base64url characters, not starting with '-'", id)
		}
	}
}
