package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeFiles are the demo cluster and its hardened variant; both get the same checks.
var composeFiles = []string{"docker-compose.yml", "docker-compose.secure.yml"}

type composeService struct {
	Image       string            `yaml:"image"`
	User        string            `yaml:"user"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	GroupAdd    []string          `yaml:"group_add"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Ports   []string `yaml:"ports"`
	Volumes []string `yaml:"volumes"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

func loadCompose(t *testing.T, name string) composeFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return f
}

// interpolate is what compose does to a value of the file: "$$" is a literal "$" (neither file
// uses variables of the host's environment; TestSecureComposeHasNoPlaintext checks the
// hardened one).
func interpolate(s string) string { return strings.ReplaceAll(s, "$$", "$") }

// TestComposeIsSafeToRunOnALaptop: published ports listen on the loopback interface only,
// Kafka keeps its data in a volume under a fixed cluster id (so a restart keeps the log), and
// the image runs something useful with no command given. The two files share a project (the
// directory's name), so their Kafka volumes must differ.
func TestComposeIsSafeToRunOnALaptop(t *testing.T) {
	kafkaVolumes := map[string]string{}
	for _, file := range composeFiles {
		t.Run(file, func(t *testing.T) {
			f := loadCompose(t, file)
			for name, svc := range f.Services {
				for _, p := range svc.Ports {
					if !strings.HasPrefix(p, "127.0.0.1:") {
						t.Errorf("service %s publishes %q on every interface; want 127.0.0.1:HOST:CONTAINER", name, p)
					}
				}
			}
			kafka := f.Services["kafka"]
			if kafka.Environment["CLUSTER_ID"] == "" || len(kafka.Volumes) == 0 {
				t.Fatalf("kafka: CLUSTER_ID %q, volumes %v; want an explicit cluster id and a data volume", kafka.Environment["CLUSTER_ID"], kafka.Volumes)
			}
			for _, v := range kafka.Volumes {
				if vol, path, _ := strings.Cut(v, ":"); strings.HasPrefix(path, kafka.Environment["KAFKA_LOG_DIRS"]) {
					kafkaVolumes[file] = vol
				}
			}
		})
	}
	if a, b := kafkaVolumes[composeFiles[0]], kafkaVolumes[composeFiles[1]]; a == "" || a == b {
		t.Errorf("Kafka's data volumes are %q and %q: want one each, with different names (the files share a project)", a, b)
	}
	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dockerfile), "\nCMD [") {
		t.Error("Dockerfile: no CMD: a bare docker run has nothing to run")
	}
}

// TestComposeCommandsMatchTheBinaries: every cachewire service runs a command line (flags and
// environment) that its binary accepts, so the demo clusters cannot drift from the code. Each
// binary validates with --check-config, which connects to nothing. In the hardened file the
// certs service runs first, for real, into a temporary directory that stands for the certs
// volume, so the other checks also load the certificates, keys and password files it made.
// Health checks that run cachectl must parse too: pointed at nothing, they must fail as
// "unreachable" (exit 3), not as a usage error (exit 2).
func TestComposeCommandsMatchTheBinaries(t *testing.T) {
	for _, file := range composeFiles {
		t.Run(file, func(t *testing.T) { checkComposeCommands(t, file) })
	}
}

func checkComposeCommands(t *testing.T, file string) {
	f := loadCompose(t, file)
	volume := t.TempDir()
	// atVolume points the container's /certs at the temporary directory.
	atVolume := func(s string) string {
		return regexp.MustCompile(`(^|[=\s:"])/certs(/|$|[\s"])`).ReplaceAllString(interpolate(s), "${1}"+volume+"${2}")
	}
	if certs, ok := f.Services["certs"]; ok {
		if len(certs.Command) < 2 || certs.Command[0] != "cachectl" || certs.Command[1] != "certs" {
			t.Fatalf("service certs: command %v, want cachectl certs ...", certs.Command)
		}
		var args []string
		for _, a := range certs.Command[1:] {
			if strings.HasPrefix(a, "--group=") {
				a = "--group=" + strconv.Itoa(os.Getgid()) // the test may not chown to the compose file's group
			}
			args = append(args, atVolume(a))
		}
		if out, err := exec.Command(filepath.Join(binDir, "cachectl"), args...).CombinedOutput(); err != nil {
			t.Fatalf("service certs: cachectl %v: %v\n%s", args, err, out)
		}
	}
	ours := map[string]bool{"cachenode": true, "writer": true, "demo": true, "relay": true, "users": true}
	checked := 0
	for name, svc := range f.Services {
		if svc.Image != "cachewire:dev" || name == "certs" {
			continue
		}
		if len(svc.Command) == 0 || !ours[svc.Command[0]] {
			t.Errorf("service %s: command %v does not start a cachewire binary", name, svc.Command)
			continue
		}
		var args []string
		for _, a := range svc.Command[1:] {
			args = append(args, atVolume(a))
		}
		cmd := exec.Command(filepath.Join(binDir, svc.Command[0]), append(args, "--check-config")...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range svc.Environment {
			cmd.Env = append(cmd.Env, k+"="+atVolume(v))
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("service %s: %v rejected its command line: %v\n%s", name, svc.Command, err, out)
		}
		checked++
		if hc := svc.Healthcheck.Test; len(hc) > 1 && strings.HasSuffix(hc[1], "/cachectl") {
			var args []string
			for _, a := range hc[2:] {
				if strings.HasPrefix(a, "127.0.0.1:") {
					a = freeAddr(t) // nothing listens there
				}
				args = append(args, atVolume(a))
			}
			out, err := exec.Command(filepath.Join(binDir, "cachectl"), args...).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 3 {
				t.Errorf("service %s: health check %v against nothing: %v, want exit 3 (unreachable)\n%s", name, hc, err, out)
			}
		}
	}
	if checked < 5 {
		t.Fatalf("checked %d cachewire services, want the writer, three nodes and the demo client", checked)
	}
}

// flagValue returns the value of --name in args (as --name=V or --name V) and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// literalSecrets returns the passwords written into s itself: assignments to a password (or a
// PLAIN JAAS user_NAME), password flags, redis-cli's -a, REDISCLI_AUTH and ACL ">password"
// rules, whose value is not taken from elsewhere: a reference starting with "$" ($(cat FILE),
// Kafka's ${dir:…}, a shell variable), a file path, or nothing.
func literalSecrets(s string) []string {
	var found []string
	for _, re := range secretPatterns {
		for _, m := range re.FindAllStringSubmatch(s, -1) {
			if v := m[1]; v != "" && !strings.HasPrefix(v, "$") && !strings.HasPrefix(v, "/") {
				found = append(found, m[0])
			}
		}
	}
	return found
}

var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\b(?:password|passwd|user_[a-z0-9_]+|REDISCLI_AUTH)\s*[=:]\s*["']?([^"'\s;,\]]*)`),
	regexp.MustCompile(`(?i)(?:^|\s)--?(?:[a-z0-9-]*-)?(?:password|pass|token|secret|a)(?:=|\s+)["']?([^"'\s;]*)`),
	regexp.MustCompile(`(?:^|\s)on\s+>(\S*)`),
}

func TestComposeLiteralSecretsAreFound(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{`--kafka-sasl-password=hunter2`, true},
		{`redis-cli --pass hunter2 ping`, true},
		{`redis-cli -a hunter2 ping`, true},
		{`REDISCLI_AUTH=hunter2 redis-cli ping`, true},
		{`PlainLoginModule required username="admin" password="hunter2";`, true},
		{`PlainLoginModule required user_admin="hunter2";`, true},
		{`user cachewire on >hunter2 ~cw:*`, true},
		{`SCRAM-SHA-512=[password=hunter2]`, true},
		{`--kafka-sasl-password-file=/certs/kafka-node.password`, false},
		{`PlainLoginModule required username="admin" password="$${dir:/certs:kafka-admin.password}";`, false},
		{`REDISCLI_AUTH="$$(cat /certs/redis-admin.password)" redis-cli --tls ping`, false},
		{`{ printf 'SCRAM-SHA-512=password='; cat "/certs/kafka-$$user.password"; }`, false},
		{`--redis-tls-ca=/certs/ca.crt --tls-auth-clients no`, false},
	} {
		if got := len(literalSecrets(tc.s)) > 0; got != tc.want {
			t.Errorf("literalSecrets(%q) = %v, want a password found: %v", tc.s, literalSecrets(tc.s), tc.want)
		}
	}
}

// TestSecureComposeHasNoPlaintext: in docker-compose.secure.yml, Kafka's only client listener
// is SASL_SSL (the PLAINTEXT CONTROLLER listener is bound to loopback) and ACLs are enforced,
// Redis has its plaintext port closed and an ACL file, the writer and every node serve TLS and
// require client certificates and reach Kafka and Redis over TLS with credentials from files,
// the demo client and health checks present certificates, every service that reads the certs
// volume is in the group the certs step gives it to, and no value holds a password (or a
// variable compose would take from the host).
func TestSecureComposeHasNoPlaintext(t *testing.T) {
	f := loadCompose(t, "docker-compose.secure.yml")

	kafka := f.Services["kafka"].Environment
	controllers := strings.Split(kafka["KAFKA_CONTROLLER_LISTENER_NAMES"], ",")
	protocols := map[string]string{}
	for _, pair := range strings.Split(kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], ",") {
		name, proto, _ := strings.Cut(pair, ":")
		protocols[name] = proto
	}
	clients := 0
	for _, l := range strings.Split(kafka["KAFKA_LISTENERS"], ",") {
		name, addr, _ := strings.Cut(l, "://")
		proto := protocols[name]
		if proto == "" && (name == "PLAINTEXT" || name == "SSL" || name == "SASL_SSL" || name == "SASL_PLAINTEXT") {
			proto = name // Kafka's default mapping for these names
		}
		switch {
		case slices.Contains(controllers, name):
			if !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("kafka: controller listener %s binds %q; want 127.0.0.1 (User:ANONYMOUS is a super user there)", name, addr)
			}
		case proto != "SASL_SSL":
			t.Errorf("kafka: client listener %s is %q; want SASL_SSL only", l, proto)
		default:
			clients++
		}
	}
	if clients != 1 {
		t.Errorf("kafka: KAFKA_LISTENERS %q has %d SASL_SSL client listeners, want 1", kafka["KAFKA_LISTENERS"], clients)
	}
	for _, l := range strings.Split(kafka["KAFKA_ADVERTISED_LISTENERS"], ",") {
		if name, _, _ := strings.Cut(l, "://"); protocols[name] != "SASL_SSL" {
			t.Errorf("kafka: advertised listener %s is not SASL_SSL", l)
		}
	}
	if kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] != "false" || !strings.HasSuffix(kafka["KAFKA_AUTHORIZER_CLASS_NAME"], "StandardAuthorizer") {
		t.Errorf("kafka: authorizer %q, allow.everyone.if.no.acl.found %q; want StandardAuthorizer and false",
			kafka["KAFKA_AUTHORIZER_CLASS_NAME"], kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"])
	}

	redis := f.Services["redis"].Command
	if port, _ := flagValue(redis, "port"); port != "0" {
		t.Errorf("redis: --port %q, want 0 (no plaintext port): %v", port, redis)
	}
	for _, flag := range []string{"tls-port", "tls-cert-file", "tls-key-file", "aclfile"} {
		if v, ok := flagValue(redis, flag); !ok || v == "" {
			t.Errorf("redis: no --%s: %v", flag, redis)
		}
	}

	var group string
	if v, ok := flagValue(f.Services["certs"].Command, "group"); ok {
		group = v
	} else {
		t.Error("certs: no --group: the services that read the volume run as other users")
	}
	for name, svc := range f.Services {
		args := svc.Command
		if len(args) > 0 {
			switch args[0] {
			case "cachenode", "writer":
				want := []string{"tls-cert", "tls-key", "tls-client-ca", "kafka-tls-ca", "kafka-sasl-mechanism", "kafka-sasl-username", "kafka-sasl-password-file"}
				if _, ok := flagValue(args, "redis-addrs"); ok {
					want = append(want, "redis-tls-ca", "redis-username", "redis-password-file")
				}
				for _, flag := range want {
					if v, ok := flagValue(args, flag); !ok || v == "" {
						t.Errorf("service %s: no --%s", name, flag)
					}
				}
			case "demo":
				for _, flag := range []string{"tls-ca", "tls-cert", "tls-key"} {
					if _, ok := flagValue(args, flag); !ok {
						t.Errorf("service %s: no --%s: the servers require a client certificate", name, flag)
					}
				}
			}
		}
		if hc := svc.Healthcheck.Test; len(hc) > 1 && strings.HasSuffix(hc[1], "/cachectl") {
			if _, ok := flagValue(hc, "tls-cert"); !ok {
				t.Errorf("service %s: health check %v presents no client certificate", name, hc)
			}
		}
		for _, v := range svc.Volumes {
			if strings.HasPrefix(v, "certs:") && name != "certs" && !slices.Contains(svc.GroupAdd, group) {
				t.Errorf("service %s reads the certs volume but is not in group %s (group_add %v)", name, group, svc.GroupAdd)
			}
		}

		texts := append(append([]string{}, svc.Command...), svc.Healthcheck.Test...)
		texts = append(texts, strings.Join(svc.Command, " "), strings.Join(svc.Healthcheck.Test, " "))
		for k, v := range svc.Environment {
			texts = append(texts, k+"="+v)
			if upper := strings.ToUpper(k); (strings.Contains(upper, "PASSWORD") || strings.Contains(upper, "TOKEN")) &&
				!strings.HasSuffix(upper, "_FILE") && v != "" {
				t.Errorf("service %s: %s is set in the file; a password comes from a file (--…-password-file)", name, k)
			}
		}
		for _, s := range texts {
			for _, lit := range literalSecrets(s) {
				t.Errorf("service %s: %q holds a password; take it from a file in the certs volume", name, lit)
			}
			if strings.Contains(strings.ReplaceAll(s, "$$", ""), "$") {
				t.Errorf("service %s: %q has a lone $, which compose replaces with a variable of the host; write $$", name, s)
			}
		}
	}
}
