package redistier

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachewire/cachewire/internal/certgen"
	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/invalidation"
)

// These tests run a real redis-server (TLS, ACL users), which miniredis cannot stand in for:
// it has neither TLS nor ACL rules.

const (
	aclPrefix = "tt:"
	adminPass = "admin-secret"
	cwPass    = "cw-secret"
	// sentinelPass is the password of the Sentinel's user sentinel-client.
	sentinelPass = "sentinel-secret"
)

// secureRedis is a redis-server serving TLS only, on 127.0.0.1, with ACL users.
type secureRedis struct {
	Addr   string
	CA     *certgen.CA
	Client *certgen.Pair // a client certificate (CN cw), signed by CA
	cmd    *exec.Cmd
	exited chan struct{}
	// for a Sentinel beside it
	bin, dir, certFile, keyFile, caFile string
}

type redisOpts struct {
	mtls    bool     // tls-auth-clients yes
	cluster bool     // a one-node Redis Cluster holding every slot
	users   []string // ACL file lines beside the admin's and "user default off"
}

// freePort returns a port nothing listened on a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startSecureRedis(t *testing.T, o redisOpts) *secureRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH: the TLS and ACL tests need a real Redis (built with TLS)")
	}
	dir := t.TempDir()
	ca, err := certgen.NewCA("redistier test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(certgen.Leaf{CommonName: "redis", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Issue(certgen.Leaf{CommonName: "cw", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	sf, err := srv.WriteFiles(dir, "redis")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	acl := append([]string{"user default off", "user admin on >" + adminPass + " ~* &* +@all"}, o.users...)
	aclFile := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(aclFile, []byte(strings.Join(acl, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auth := "no"
	if o.mtls {
		auth = "yes"
	}
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		args := []string{"--bind", "127.0.0.1", "--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", sf.Cert, "--tls-key-file", sf.Key, "--tls-ca-cert-file", caFile,
			"--tls-auth-clients", auth, "--save", "", "--appendonly", "no", "--dir", dir,
			"--aclfile", aclFile, "--protected-mode", "no", "--loglevel", "notice"}
		if o.cluster {
			args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes-"+strconv.Itoa(attempt)+".conf"),
				"--tls-cluster", "yes", "--cluster-announce-ip", "127.0.0.1", "--cluster-port", strconv.Itoa(freePort(t)))
		}
		r := &secureRedis{Addr: "127.0.0.1:" + strconv.Itoa(port), CA: ca, Client: cli,
			bin: bin, dir: dir, certFile: sf.Cert, keyFile: sf.Key, caFile: caFile}
		log, ok := r.launch(t, bin, args, "Ready to accept connections")
		if ok {
			if o.cluster {
				r.makeCluster(t)
			}
			return r
		}
		if attempt < 2 && strings.Contains(log, "Address already in use") {
			continue // another process took the port meanwhile
		}
		t.Fatalf("redis-server did not start:\n%s", log)
	}
}

// launch runs bin with args and waits until it logs the line ready (true, and it is killed
// on cleanup) or exits or 15 seconds pass (false, with what it logged).
func (r *secureRedis) launch(t *testing.T, bin string, args []string, ready string) (string, bool) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	isReady := make(chan struct{})
	var mu sync.Mutex
	var log strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(out)
		once := false
		for sc.Scan() {
			line := sc.Text()
			if once {
				continue
			}
			mu.Lock()
			log.WriteString(line + "\n")
			mu.Unlock()
			if strings.Contains(line, ready) {
				once = true
				close(isReady)
			}
		}
	}()
	go func() { <-logDone; _ = cmd.Wait(); close(r.exited) }()
	logged := func() string { mu.Lock(); defer mu.Unlock(); return log.String() }
	select {
	case <-isReady:
		t.Cleanup(r.Stop)
		return "", true
	case <-r.exited:
		return logged(), false
	case <-time.After(15 * time.Second):
		r.Stop()
		return logged() + "(not ready within 15s)", false
	}
}

// Stop kills the server and waits for it to exit.
func (r *secureRedis) Stop() {
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// TLS returns a client TLS configuration trusting the server's CA, with the client certificate
// when withCert.
func (r *secureRedis) TLS(t *testing.T, withCert bool) *tls.Config {
	c := &tls.Config{RootCAs: r.CA.Pool(), MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := r.Client.TLS()
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c
}

// Admin returns a client for the admin user.
func (r *secureRedis) Admin(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, Username: "admin", Password: adminPass, TLSConfig: r.TLS(t, true)})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// makeCluster gives the one node every slot and waits until the cluster is up.
func (r *secureRedis) makeCluster(t *testing.T) {
	t.Helper()
	a := r.Admin(t)
	ctx := ctxT(t)
	if err := a.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, func() string {
		info, err := a.ClusterInfo(ctx).Result()
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return fmt.Sprintf("cluster not up: %v %q", err, info)
		}
		return ""
	})
}

// userLine is an ACL file line for user with password and rule.
func userLine(user, password, rule string) string {
	return "user " + user + " on >" + password + " " + rule
}

// ruleWithout is ACLRule(aclPrefix) less the command cmd.
func ruleWithout(cmd string) string {
	var kept []string
	for _, f := range strings.Fields(ACLRule(aclPrefix)) {
		if f != "+"+cmd {
			kept = append(kept, f)
		}
	}
	return strings.Join(kept, " ")
}

func tierFor(t *testing.T, cfg Config) *Tier {
	t.Helper()
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = aclPrefix
	}
	// Generous timeouts: the machine is shared and the tests run under -race.
	cfg.DialTimeout, cfg.ReadTimeout, cfg.WriteTimeout = 3*time.Second, 3*time.Second, 3*time.Second
	tier, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tier.Close() })
	return tier
}

// exercise does real work through tier: fills, gets, an event batch, a lost epoch, and a
// script reload. admin runs what a limited user may not (FLUSHALL, SCRIPT FLUSH).
func exercise(t *testing.T, tier *Tier, admin redis.Cmdable) {
	t.Helper()
	ctx := ctxT(t)
	if err := tier.CheckAccess(ctx); err != nil {
		t.Fatalf("CheckAccess: %v", err)
	}
	ok, err := tier.Fill(ctx, tier.BeginFill(ctx, "a"), "a", 1, []byte("a1"))
	if err != nil || !ok {
		t.Fatalf("Fill: %v %v", ok, err)
	}
	if e, found, err := tier.Get(ctx, "a"); err != nil || !found || string(e.Value) != "a1" {
		t.Fatalf("Get = %+v %v %v", e, found, err)
	}
	if ok, err := tier.FillMissing(ctx, tier.BeginFill(ctx, "m"), "m", 1); err != nil || !ok {
		t.Fatalf("FillMissing: %v %v", ok, err)
	}
	l, err := tier.BeginLease(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := tier.FillLeased(ctx, l, "l", []byte("l0"), false); err != nil || !ok {
		t.Fatalf("FillLeased: %v %v", ok, err)
	}
	if err := tier.Drop(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	// A restarted Redis without the scripts: ApplyBatch reloads them (SCRIPT LOAD).
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	events := []invalidation.Event{
		{Key: "a", Version: 2, Op: invalidation.OpUpsert, Value: []byte("a2"), HasValue: true},
		{Key: "a", Version: 1, Op: invalidation.OpUpsert, Value: []byte("a1"), HasValue: true}, // late
		{Key: "b", Version: 3, Op: invalidation.OpDelete},
		{Key: "m", Op: invalidation.OpEvict},
	}
	applied, ignored, err := tier.ApplyBatch(ctx, events, invalidation.RefreshAll)
	if err != nil || applied != 3 || ignored != 1 {
		t.Fatalf("ApplyBatch = %d applied, %d ignored, %v; want 3, 1, nil", applied, ignored, err)
	}
	if e, found, err := tier.Get(ctx, "a"); err != nil || !found || string(e.Value) != "a2" || e.Version != 2 {
		t.Fatalf("Get after events = %+v %v %v", e, found, err)
	}
	// Redis loses everything (and the scripts: EVAL runs them): a fill begun before is refused.
	tok := tier.BeginFill(ctx, "c")
	if err := admin.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := tier.Fill(ctx, tok, "c", 1, []byte("c1")); ok || !errors.Is(err, ErrEpochChanged) {
		t.Fatalf("fill begun before the flush: %v %v, want ErrEpochChanged", ok, err)
	}
	if ok, err := tier.Fill(ctx, tier.BeginFill(ctx, "c"), "c", 1, []byte("c1")); err != nil || !ok {
		t.Fatalf("fill in the new epoch: %v %v", ok, err)
	}
	if s := tier.Stats(); s.NewEpochs != 1 || s.Errors != 0 {
		t.Fatalf("stats %+v: want one new epoch, no errors", s)
	}
	if err := tier.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tier.CheckAccess(ctx); err != nil {
		t.Fatalf("CheckAccess again: %v", err)
	}
}

// noDenials fails t if Redis logged an ACL denial: the rule must cover everything the tier runs.
func noDenials(t *testing.T, admin *redis.Client) {
	t.Helper()
	entries, err := admin.ACLLog(ctxT(t), 100).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("ACL LOG: user %q denied %s on %q (%s)", e.Username, e.Reason, e.Object, e.Context)
	}
}

// TestTLSAndACLUserDoRealWork: over TLS, as a user with exactly ACLRule, the tier passes
// CheckAccess and every call works, and Redis denies it nothing.
func TestTLSAndACLUserDoRealWork(t *testing.T) {
	r := startSecureRedis(t, redisOpts{users: []string{userLine("cw", cwPass, ACLRule(aclPrefix))}})
	admin := r.Admin(t)
	tier := tierFor(t, Config{Addrs: []string{r.Addr}, Username: "cw", Password: cwPass, TLS: r.TLS(t, false)})
	exercise(t, tier, admin)
	noDenials(t, admin)
}

// TestMutualTLS: with tls-auth-clients yes, a client certificate in Config.TLS is accepted and
// a client without one is refused with ErrTLS.
func TestMutualTLS(t *testing.T) {
	r := startSecureRedis(t, redisOpts{mtls: true, users: []string{userLine("cw", cwPass, ACLRule(aclPrefix))}})
	admin := r.Admin(t)
	tier := tierFor(t, Config{Addrs: []string{r.Addr}, Username: "cw", Password: cwPass, TLS: r.TLS(t, true)})
	exercise(t, tier, admin)
	noDenials(t, admin)

	noCert := tierFor(t, Config{Addrs: []string{r.Addr}, Username: "cw", Password: cwPass, TLS: r.TLS(t, false)})
	err := noCert.CheckAccess(ctxT(t))
	if !errors.Is(err, ErrTLS) {
		t.Fatalf("CheckAccess without a client certificate: %v, want ErrTLS", err)
	}
	t.Logf("without a client certificate: %v", err)
}

// TestCheckAccessNamesTheMissingCommand: for every command the tier needs, a user without it
// fails CheckAccess with ErrDenied, and the message names the command and the user. So the
// rule is minimal: none of its commands can go. CLUSTER SLOTS, CLUSTER MYID and COMMAND are
// checked in cluster mode (TestClusterTLSACL).
func TestCheckAccessNamesTheMissingCommand(t *testing.T) {
	var users []string
	for i, c := range Commands() {
		if c == "cluster|slots" || c == "cluster|myid" || c == "command" {
			continue
		}
		users = append(users, userLine("lack"+strconv.Itoa(i), cwPass, ruleWithout(c)))
	}
	users = append(users, userLine("cw", cwPass, ACLRule(aclPrefix)),
		userLine("otherkeys", cwPass, strings.Replace(ACLRule(aclPrefix), "~"+aclPrefix+"*", "~other:*", 1)))
	r := startSecureRedis(t, redisOpts{users: users})
	ctx := ctxT(t)
	// Both epoch keys and scripts exist, as on a Redis other nodes already use: a missing SET,
	// EVAL or SCRIPT LOAD is then not hit on connect, and CheckAccess must find it itself.
	full := tierFor(t, Config{Addrs: []string{r.Addr}, Username: "cw", Password: cwPass, TLS: r.TLS(t, false)})
	if err := full.CheckAccess(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range Commands() {
		if c == "cluster|slots" || c == "cluster|myid" || c == "command" {
			continue
		}
		user := "lack" + strconv.Itoa(i)
		tier := tierFor(t, Config{Addrs: []string{r.Addr}, Username: user, Password: cwPass, TLS: r.TLS(t, false)})
		err := tier.CheckAccess(ctx)
		if !errors.Is(err, ErrDenied) || errors.Is(err, ErrUnreachable) {
			t.Errorf("user without %s: CheckAccess = %v, want ErrDenied", c, err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "may not run "+strings.ToUpper(c)+" ") || !strings.Contains(msg, `"`+user+`"`) {
			t.Errorf("user without %s: %q does not name the command and the user", c, msg)
		}
		t.Logf("without %s: %v", c, err)
	}
	tier := tierFor(t, Config{Addrs: []string{r.Addr}, Username: "otherkeys", Password: cwPass, TLS: r.TLS(t, false)})
	err := tier.CheckAccess(ctx)
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), `"otherkeys"`) || !strings.Contains(err.Error(), `prefix "`+aclPrefix+`"`) {
		t.Errorf("user without the prefix's keys: CheckAccess = %v, want ErrDenied", err)
	}
	t.Logf("e.g.: %v", err)
}

// TestCheckAccessClassifiesFailures: wrong password, no password, another CA, another server
// name, plaintext against the TLS port, and a stopped server.
func TestCheckAccessClassifiesFailures(t *testing.T) {
	r := startSecureRedis(t, redisOpts{users: []string{userLine("cw", cwPass, ACLRule(aclPrefix))}})
	ctx := ctxT(t)
	otherCA, err := certgen.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	wrongName := r.TLS(t, false)
	wrongName.ServerName = "redis.example"
	for _, tc := range []struct {
		name string
		cfg  Config
		want error // nil: any error but not ErrDenied
	}{
		{"wrong password", Config{Username: "cw", Password: "nope", TLS: r.TLS(t, false)}, ErrAuth},
		{"unknown user", Config{Username: "nobody", Password: cwPass, TLS: r.TLS(t, false)}, ErrAuth},
		{"no credentials", Config{TLS: r.TLS(t, false)}, ErrAuth},
		{"another CA", Config{Username: "cw", Password: cwPass, TLS: &tls.Config{RootCAs: otherCA.Pool()}}, ErrTLS},
		{"another server name", Config{Username: "cw", Password: cwPass, TLS: wrongName}, ErrTLS},
		{"plaintext to the TLS port", Config{Username: "cw", Password: cwPass}, nil},
	} {
		tc.cfg.Addrs = []string{r.Addr}
		err := tierFor(t, tc.cfg).CheckAccess(ctx)
		switch {
		case err == nil:
			t.Errorf("%s: CheckAccess passed", tc.name)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: CheckAccess = %v, want %v", tc.name, err, tc.want)
		case tc.want == nil && errors.Is(err, ErrDenied):
			t.Errorf("%s: CheckAccess = %v", tc.name, err)
		default:
			t.Logf("%s: %v", tc.name, err)
		}
	}

	tier := tierFor(t, Config{Addrs: []string{r.Addr}, Username: "cw", Password: cwPass, TLS: r.TLS(t, false)})
	if err := tier.CheckAccess(ctx); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	// A fresh tier (no pooled connection) and the one whose connections the stop broke.
	fresh := tierFor(t, Config{Addrs: []string{r.Addr}, Username: "cw", Password: cwPass, TLS: r.TLS(t, false)})
	for name, tr := range map[string]*Tier{"connected": tier, "fresh": fresh} {
		start := time.Now()
		err := tr.CheckAccess(ctx)
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("%s tier, Redis stopped: CheckAccess = %v, want ErrUnreachable", name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s tier, Redis stopped: CheckAccess took %v", name, d)
		}
		t.Logf("%s tier, Redis stopped (%v): %v", name, time.Since(start).Round(time.Millisecond), err)
	}
	if err := tier.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tier.CheckAccess(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("CheckAccess after Close: %v", err)
	}
}

// TestClusterTLSACL: a one-node Redis Cluster over TLS: the limited user works in cluster mode,
// and CLUSTER SLOTS, CLUSTER MYID and COMMAND are needed there.
func TestClusterTLSACL(t *testing.T) {
	r := startSecureRedis(t, redisOpts{cluster: true, users: []string{
		userLine("cw", cwPass, ACLRule(aclPrefix)),
		userLine("noslots", cwPass, ruleWithout("cluster|slots")),
		userLine("nocommand", cwPass, ruleWithout("command")),
		userLine("nomyid", cwPass, ruleWithout("cluster|myid")),
	}})
	admin := r.Admin(t)
	tier := tierFor(t, Config{Addrs: []string{r.Addr}, Cluster: true, Username: "cw", Password: cwPass, TLS: r.TLS(t, false)})
	exercise(t, tier, admin)
	noDenials(t, admin)
	for user, cmd := range map[string]string{"noslots": "CLUSTER|SLOTS", "nocommand": "COMMAND", "nomyid": "CLUSTER|MYID"} {
		tier := tierFor(t, Config{Addrs: []string{r.Addr}, Cluster: true, Username: user, Password: cwPass, TLS: r.TLS(t, false)})
		err := tier.CheckAccess(ctxT(t))
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "may not run "+cmd+" ") {
			t.Errorf("cluster user %s: CheckAccess = %v, want ErrDenied naming %s", user, err, cmd)
		}
	}
}

// startSentinel starts a Sentinel monitoring master as "m", over TLS (to its clients and to the
// master), authenticating to the master as admin; its own clients must log in as sentinel-client.
func startSentinel(t *testing.T, master *secureRedis) *secureRedis {
	t.Helper()
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		_, mport, _ := net.SplitHostPort(master.Addr)
		conf := filepath.Join(master.dir, "sentinel-"+strconv.Itoa(attempt)+".conf")
		lines := []string{"bind 127.0.0.1", "port 0", "tls-port " + strconv.Itoa(port),
			"tls-cert-file " + master.certFile, "tls-key-file " + master.keyFile, "tls-ca-cert-file " + master.caFile,
			"tls-auth-clients no", "tls-replication yes", "dir " + master.dir, "protected-mode no",
			"sentinel monitor m 127.0.0.1 " + mport + " 1", "sentinel auth-user m admin", "sentinel auth-pass m " + adminPass,
			"user default off", "user sentinel-client on >" + sentinelPass + " ~* &* +@all"}
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := &secureRedis{Addr: "127.0.0.1:" + strconv.Itoa(port), CA: master.CA, Client: master.Client}
		log, ok := s.launch(t, master.bin, []string{conf, "--sentinel"}, "+monitor master m")
		if ok {
			return s
		}
		if attempt < 2 && strings.Contains(log, "Address already in use") {
			continue
		}
		t.Fatalf("redis-server --sentinel did not start:\n%s", log)
	}
}

// TestSentinelTLSACL: in Sentinel mode, over TLS to the Sentinel and to the master, with the
// Sentinel's own user (SentinelUsername) and the limited user on the master, the tier works.
func TestSentinelTLSACL(t *testing.T) {
	r := startSecureRedis(t, redisOpts{users: []string{userLine("cw", cwPass, ACLRule(aclPrefix))}})
	s := startSentinel(t, r)
	admin := r.Admin(t)
	cfg := Config{Addrs: []string{s.Addr}, MasterName: "m", Username: "cw", Password: cwPass,
		SentinelUsername: "sentinel-client", SentinelPassword: sentinelPass, TLS: r.TLS(t, false)}
	exercise(t, tierFor(t, cfg), admin)
	noDenials(t, admin)

	cfg.SentinelPassword = "nope"
	err := tierFor(t, cfg).CheckAccess(ctxT(t))
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "Sentinel") {
		t.Fatalf("wrong Sentinel password: CheckAccess = %v, want ErrAuth about the Sentinels", err)
	}
	t.Logf("wrong Sentinel password: %v", err)
}
