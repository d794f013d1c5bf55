package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/certgen"
	"github.com/cachewire/cachewire/redistier"
)

// certsArgs is a run like the compose file's certs service, smaller.
func certsArgs(dir string, extra ...string) []string {
	return append([]string{"certs", "--dir", dir, "--server", "kafka,writer", "--client", "demo-client",
		"--secrets", "kafka-admin,kafka-node", "--redis-acl", "users.acl", "--redis-prefix", "tp:"}, extra...)
}

// runCerts runs cachectl certs and fails t unless it exits 0.
func runCerts(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := ctlIn(t, nil, "", args...)
	if code != exitOK {
		t.Fatalf("cachectl %v = %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// snapshot reads every file in dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = raw
	}
	return files
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCert(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func caPool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	p.AddCert(readCert(t, filepath.Join(dir, "ca.crt")))
	return p
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestCertsMakesAUsableSet: the CA, a server certificate valid for its name and loopback, a
// client certificate for client auth only, keys readable by their owner only, passwords of 32
// hex characters without a newline, and an ACL file whose tier user has exactly
// redistier.ACLRule; one output line per file.
func TestCertsMakesAUsableSet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	out := runCerts(t, certsArgs(dir)...)
	files := snapshot(t, dir)
	want := []string{"ca.crt", "ca.key", "kafka.crt", "kafka.key", "writer.crt", "writer.key", "demo-client.crt", "demo-client.key",
		"kafka-admin.password", "kafka-node.password", "redis-admin.password", "redis-cachewire.password", "users.acl"}
	for _, name := range want {
		if _, ok := files[name]; !ok {
			t.Errorf("%s was not written", name)
		}
		if !strings.Contains(out, "wrote "+filepath.Join(dir, name)+"\n") {
			t.Errorf("the output does not report %s:\n%s", name, out)
		}
	}
	if len(files) != len(want) || strings.Count(out, "\n") != len(want) {
		t.Errorf("files %v, output lines %d; want exactly %v, one line each", slices.Sorted(maps.Keys(files)), strings.Count(out, "\n"), want)
	}

	roots := caPool(t, dir)
	kafka := readCert(t, filepath.Join(dir, "kafka.crt"))
	for _, host := range []string{"kafka", "localhost", "127.0.0.1"} {
		if _, err := kafka.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("kafka.crt as a server certificate for %s: %v", host, err)
		}
	}
	if _, err := kafka.Verify(x509.VerifyOptions{DNSName: "writer", Roots: roots}); err == nil {
		t.Error("kafka.crt verifies for the host writer; want its own name only")
	}
	client := readCert(t, filepath.Join(dir, "demo-client.crt"))
	if client.Subject.CommonName != "demo-client" || !slices.Equal(client.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("demo-client.crt: CN %q, extended key usage %v; want CN demo-client, client auth only", client.Subject.CommonName, client.ExtKeyUsage)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("demo-client.crt as a client certificate: %v", err)
	}
	for _, name := range []string{"kafka", "writer", "demo-client"} {
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")); err != nil {
			t.Errorf("%s.crt and %s.key are not a pair: %v", name, name, err)
		}
	}

	for name := range files {
		wantMode := os.FileMode(0o600)
		if strings.HasSuffix(name, ".crt") {
			wantMode = 0o644
		}
		if got := mode(t, filepath.Join(dir, name)); got != wantMode {
			t.Errorf("%s has mode %v, want %v", name, got, wantMode)
		}
	}
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for _, name := range []string{"kafka-admin.password", "kafka-node.password", "redis-admin.password", "redis-cachewire.password"} {
		if !hex32.Match(files[name]) {
			t.Errorf("%s = %q, want 32 hex characters and no newline", name, files[name])
		}
	}
	if bytes.Equal(files["kafka-admin.password"], files["kafka-node.password"]) {
		t.Error("two passwords are the same")
	}

	acl := strings.Split(strings.TrimSuffix(string(files["users.acl"]), "\n"), "\n")
	wantACL := []string{
		"user default off",
		"user admin on >" + string(files["redis-admin.password"]) + " ~* &* +@all",
		"user cachewire on >" + string(files["redis-cachewire.password"]) + " " + redistier.ACLRule("tp:"),
	}
	if !slices.Equal(acl, wantACL) {
		t.Errorf("users.acl =\n%s\nwant\n%s", strings.Join(acl, "\n"), strings.Join(wantACL, "\n"))
	}
}

// TestCertsSecondRunKeepsEverything: `docker compose up` twice rotates nothing; a new name in
// the second run gets a certificate from the kept CA and nothing else changes.
func TestCertsSecondRunKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	runCerts(t, certsArgs(dir)...)
	first := snapshot(t, dir)

	out := runCerts(t, certsArgs(dir)...)
	if strings.Contains(out, "wrote") || strings.Count(out, "kept  ") != len(first) {
		t.Errorf("second run:\n%s\nwant one kept line per file (%d) and nothing written", out, len(first))
	}
	second := snapshot(t, dir)
	for name, raw := range first {
		if !bytes.Equal(second[name], raw) {
			t.Errorf("%s changed on the second run", name)
		}
	}

	out = runCerts(t, certsArgs(dir, "--server", "kafka,writer,redis")...)
	third := snapshot(t, dir)
	for name, raw := range first {
		if !bytes.Equal(third[name], raw) {
			t.Errorf("%s changed when redis was added", name)
		}
	}
	if strings.Count(out, "wrote ") != 2 || !strings.Contains(out, "wrote "+filepath.Join(dir, "redis.crt")) {
		t.Errorf("adding redis:\n%s\nwant redis.key and redis.crt written, the rest kept", out)
	}
	if _, err := readCert(t, filepath.Join(dir, "redis.crt")).Verify(x509.VerifyOptions{DNSName: "redis", Roots: caPool(t, dir)}); err != nil {
		t.Errorf("redis.crt under the kept CA: %v", err)
	}
}

// TestCertsReissuesWhatCannotBeUsed: a leaf from another CA, a leaf near its expiry, and
// --renew are re-issued under the kept CA; passwords and the CA stay.
func TestCertsReissuesWhatCannotBeUsed(t *testing.T) {
	dir := t.TempDir()
	runCerts(t, certsArgs(dir)...)
	before := snapshot(t, dir)

	other, err := certgen.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(certgen.Leaf{CommonName: "writer", Hosts: []string{"writer", "localhost", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := foreign.WriteFiles(dir, "writer"); err != nil {
		t.Fatal(err)
	}
	out := runCerts(t, certsArgs(dir)...)
	if !strings.Contains(out, "wrote "+filepath.Join(dir, "writer.crt")+" (re-issued: not valid under ca.crt)") || strings.Count(out, "wrote ") != 2 {
		t.Errorf("a writer.crt from another CA:\n%s\nwant writer.key and writer.crt re-issued, nothing else", out)
	}
	if _, err := readCert(t, filepath.Join(dir, "writer.crt")).Verify(x509.VerifyOptions{DNSName: "writer", Roots: caPool(t, dir)}); err != nil {
		t.Errorf("re-issued writer.crt: %v", err)
	}

	// Eleven months on, every leaf is within 30 days of its expiry; the CA has years left.
	var buf bytes.Buffer
	c := certsConfig{Dir: dir, Servers: []string{"kafka", "writer"}, Clients: []string{"demo-client"}, Group: -1,
		Now: func() time.Time { return time.Now().Add(340 * 24 * time.Hour) }}
	if err := makeCerts(c, &buf); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "(renewed: it expires "); n != 6 {
		t.Errorf("eleven months later:\n%s\nwant the three pairs renewed", buf.String())
	}

	out = runCerts(t, "certs", "--dir", dir, "--renew", "all")
	if strings.Count(out, "(renewed on request)") != 6 || !strings.Contains(out, "kept  "+filepath.Join(dir, "ca.crt")) {
		t.Errorf("--renew all with no names:\n%s\nwant the three pairs found in --dir renewed, the CA kept", out)
	}
	after := snapshot(t, dir)
	for _, name := range []string{"ca.crt", "ca.key", "kafka-admin.password", "redis-cachewire.password", "users.acl"} {
		if !bytes.Equal(after[name], before[name]) {
			t.Errorf("%s changed; re-issuing leaves keeps the CA and the passwords", name)
		}
	}
	if kafka := readCert(t, filepath.Join(dir, "kafka.crt")); kafka.VerifyHostname("kafka") != nil || !slices.Contains(kafka.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("kafka.crt renewed without its names or use: %v %v", kafka.DNSNames, kafka.ExtKeyUsage)
	}
	if cl := readCert(t, filepath.Join(dir, "demo-client.crt")); slices.Contains(cl.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Error("demo-client.crt renewed as a server certificate")
	}
}

// TestCertsGroup: with --group the keys, passwords and ACL file are readable by the group (the
// services run as other users) and the directory is closed to others; the CA's key is not
// shared.
func TestCertsGroup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	gid := strconv.Itoa(os.Getgid())
	runCerts(t, certsArgs(dir, "--group", gid)...)
	for name, want := range map[string]os.FileMode{"ca.key": 0o600, "ca.crt": 0o644, "kafka.key": 0o640, "kafka.crt": 0o644,
		"kafka-admin.password": 0o640, "users.acl": 0o640} {
		if got := mode(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s has mode %v with --group, want %v", name, got, want)
		}
	}
	if got := mode(t, dir); got != 0o750 {
		t.Errorf("the directory has mode %v with --group, want 0750", got)
	}
	// Without --group later, the files keep what they have.
	runCerts(t, certsArgs(dir)...)
	if got := mode(t, filepath.Join(dir, "kafka.key")); got != 0o640 {
		t.Errorf("kafka.key has mode %v after a run without --group, want it left at 0640", got)
	}
}

// TestCertsRefusesWhatItCannotDo: usage errors exit 2 and say what to change; a missing CA key
// that a new leaf would need exits 5 and says how to recover.
func TestCertsRefusesWhatItCannotDo(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"certs", "--server", "kafka"}, "--dir is required"},
		{[]string{"certs", "--dir", dir, "--server", "kafka,../x"}, `--server "../x": a name is`},
		{[]string{"certs", "--dir", dir, "--client", "a b"}, `--client "a b": a name is`},
		{[]string{"certs", "--dir", dir, "--server", "ca"}, "the CA's own file name"},
		{[]string{"certs", "--dir", dir, "--server", "app", "--client", "app"}, `--client "app": already named by --server`},
		{[]string{"certs", "--dir", dir, "--renew", "all,kafka"}, `"all" stands alone`},
		{[]string{"certs", "--dir", dir, "--redis-acl", "kafka.key"}, "pick another, such as users.acl"},
		{[]string{"certs", "--dir", dir, "--redis-acl", "users.acl", "--redis-user", "admin"}, "must not be the admin"},
		{[]string{"certs", "--dir", dir, "--group", "-2"}, "--group -2"},
		{[]string{"certs", "--dir", dir, "extra"}, "want --dir DIR"},
	} {
		code, _, errOut := ctlIn(t, nil, "", tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("cachectl %v = %d %q; want exit 2 naming %q", tc.args, code, errOut, tc.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("usage errors wrote %d files", len(entries))
	}

	runCerts(t, "certs", "--dir", dir, "--server", "kafka")
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	if out := runCerts(t, "certs", "--dir", dir, "--server", "kafka"); !strings.Contains(out, "kept  "+filepath.Join(dir, "kafka.crt")) {
		t.Errorf("without ca.key, a good leaf is still kept:\n%s", out)
	}
	code, _, errOut := ctlIn(t, nil, "", "certs", "--dir", dir, "--server", "kafka,redis")
	if code != exitError || !strings.Contains(errOut, "ca.key is missing, so "+filepath.Join(dir, "redis.crt")+" cannot be issued") ||
		!strings.Contains(errOut, "remove "+filepath.Join(dir, "ca.crt")) {
		t.Errorf("a new leaf without ca.key = %d %q; want exit 5 naming ca.key and how to recover", code, errOut)
	}
}
