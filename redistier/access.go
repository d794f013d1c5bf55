package redistier

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Errors CheckAccess returns, for errors.Is. ErrUnreachable means Redis is merely down, and a
// node may start without it; the others mean the deployment is wrong, and it should not.
var (
	// ErrUnreachable wraps a CheckAccess failure that says nothing about the configuration:
	// connection refused, a timeout, a server that is loading or closed the connection. The
	// node can start anyway and serve from L1 and the origin until Redis comes up.
	ErrUnreachable = errors.New("redistier: Redis unreachable")
	// ErrDenied wraps a NOPERM reply: the Redis ACL user may not run a command the tier needs, or
	// may not touch keys under the tier's prefix. The message names the command and the user.
	ErrDenied = errors.New("redistier: Redis ACL denies a command the tier needs")
	// ErrAuth wraps a WRONGPASS or NOAUTH reply: Redis refused the username and password (or
	// wants a password and none was configured).
	ErrAuth = errors.New("redistier: Redis refused the username or password")
	// ErrTLS wraps a failed TLS handshake: the server's certificate was not trusted (wrong CA,
	// or a server name or IP address it does not cover), the server refused the client's
	// certificate, or the server does not speak TLS.
	ErrTLS = errors.New("redistier: TLS with Redis failed")
)

// commands are the Redis commands the tier runs on the Redis servers, as ACL names. The Lua
// scripts call GET, SET and PTTL themselves, and Redis checks those against the ACL too.
var commands = []string{
	"ping",          // Ping
	"info",          // INFO server on each new connection: the run_id that detects a restart or failover
	"get",           // Get, BeginLease, and inside both scripts
	"set",           // inside both scripts: entries, tombstones, epoch keys
	"pttl",          // inside the apply script: a fill or drop never shortens a tombstone
	"evalsha",       // every script call
	"eval",          // the fallback when Redis does not hold a script (NOSCRIPT)
	"script|load",   // ApplyBatch reloads the scripts (on every cluster master) after NOSCRIPT
	"cluster|slots", // cluster mode: the slot map
	"cluster|myid",  // cluster mode: which node a connection reaches (its slots' epochs are stamped)
	"command",       // cluster mode: go-redis reads command key positions and routing policies
}

// Commands returns the Redis commands the tier needs, as ACL command names ("script|load" is
// the LOAD subcommand of SCRIPT). CLUSTER SLOTS, CLUSTER MYID and COMMAND are needed in cluster mode only;
// HELLO and AUTH, which every client may run, are not listed. The tier never uses Pub/Sub,
// READONLY (it reads from masters only) or any other command on the data servers.
func Commands() []string { return append([]string(nil), commands...) }

// ACLRule returns the ACL rule for the tier's Redis user, for keys under prefix ("" means the
// default "cw:"): the user's keys, no Pub/Sub channels, and exactly the commands in Commands.
// Add "on >PASSWORD" (or "#SHA256") to make a usable user:
//
//	ACL SETUSER cw on >secret ~cw:* resetchannels -@all +ping +info +get +set +pttl +evalsha +eval +script|load +cluster|slots +cluster|myid +command
//
// A glob character in prefix (*, ?, [, \) is escaped. On Redis 7.2 and later go-redis also
// sends CLIENT SETINFO on each connection; it ignores the refusal, which Redis records in ACL
// LOG, so add "+client|setinfo" there to keep that log quiet (Redis 7.0 has no such command and
// rejects a rule naming it).
func ACLRule(prefix string) string {
	if prefix == "" {
		prefix = "cw:"
	}
	var b strings.Builder
	b.WriteString("~")
	for _, r := range prefix {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteString("* resetchannels -@all")
	for _, c := range commands {
		b.WriteString(" +" + c)
	}
	return b.String()
}

// accessSuffix follows the prefix in the probe key CheckAccess writes. Like the epoch key's, it
// starts with 0xff, which no UTF-8 cache key holds, so no entry can collide with it.
const accessSuffix = "\xffaccess-probe"

// probeTTL bounds how long CheckAccess's probe key lives: it is written as a tombstone that
// expires on its own, so a CheckAccess needs no DEL, and repeated checks leave one key at most.
const probeTTL = 10000 // ms

// CheckAccess runs, once, every Redis command the tier uses, against a probe key of its own
// (the prefix, then a byte no cache key holds) and the epoch key of that key's hash slot, so
// that a wrong deployment is reported at start-up rather than as a stream of failed calls.
// It changes no entry: the probe key is left as a tombstone that expires within 10 seconds, and
// the epoch key is only read, or created when missing, as any tier call would. It is meant for
// a tier whose Client the tier built (with a Client of the caller's the same checks run, but on
// its connections and credentials).
//
// It returns nil when everything works, and otherwise an error wrapping exactly one of:
// ErrDenied (an ACL forbids a command or the prefix's keys; the message names the command and
// the user, and how to grant it), ErrAuth (wrong username or password), ErrTLS (the server's
// certificate was not trusted, or the server refused the client's), or ErrUnreachable (Redis is
// down or did not answer in time: the tier will work once it is up). ErrClosed after Close.
// It does not start the tier's back-off.
func (t *Tier) CheckAccess(ctx context.Context) error {
	if t.closed.Load() {
		return ErrClosed
	}
	probe := t.cfg.KeyPrefix + accessSuffix
	i := 0
	if len(t.epochKeys) > 1 {
		// In cluster mode the probe key and its epoch key must share a slot; the probe key
		// has no brace (the prefix has none), so its slot is Slot(probe).
		i = int(Slot(probe))
	}
	epochKey := t.epochKeys[i]
	_, cluster := t.rdb.(*redis.ClusterClient)

	step := func(cmd string, err error) error {
		if err == nil || errors.Is(err, redis.Nil) {
			return nil
		}
		return t.classify(cmd, err)
	}
	// The first command dials, authenticates, negotiates TLS and runs the connect hook (INFO and
	// the epoch script, in single-server and Sentinel mode); in cluster mode it loads the slot
	// map (CLUSTER SLOTS) first.
	if err := step("ping", t.rdb.Ping(ctx).Err()); err != nil {
		return err
	}
	if cluster {
		if err := step("command", t.rdb.Command(ctx).Err()); err != nil {
			return err
		}
	}
	if err := step("info", t.rdb.Info(ctx, "server").Err()); err != nil {
		return err
	}
	if err := step("get", t.rdb.Get(ctx, probe).Err()); err != nil {
		return err
	}
	if err := step("script|load", t.loadScript(ctx)); err != nil {
		return err
	}
	// EVAL, as the scripts run when Redis does not hold them; then EVALSHA (loaded just above).
	seq := t.readSeq.Add(1)
	v, err := epochScript.Eval(ctx, t.rdb, []string{epochKey}, newEpoch(), t.currentRunID(), "get").Text()
	if err := step("eval", err); err != nil {
		return err
	}
	epoch := t.learn(i, v, seq)
	// Two drops of the probe key: the first writes it (SET ... PX), the second finds it and
	// reads its TTL (PTTL) first. Both leave a tombstone that expires within probeTTL.
	for n := range 2 {
		r, err := applyScript.EvalSha(ctx, t.rdb, []string{probe, epochKey},
			versionArg(0), "drop", "", "", newNonce(), probeTTL, probeTTL, epoch).Int()
		if err := step("evalsha", err); err != nil {
			return err
		}
		if r < 0 {
			// Redis began a new epoch between the two scripts: learn it and drop again.
			seq := t.readSeq.Add(1)
			v, err := epochScript.EvalSha(ctx, t.rdb, []string{epochKey}, newEpoch(), t.currentRunID(), "get").Text()
			if err := step("evalsha", err); err != nil {
				return err
			}
			epoch = t.learn(i, v, seq)
			if n == 1 {
				return nil
			}
		}
	}
	return nil
}

func (t *Tier) currentRunID() string {
	if p := t.runID.Load(); p != nil {
		return *p
	}
	return ""
}

// deniedCommand finds the command named in a NOPERM reply ("... to run the 'evalsha' command").
var deniedCommand = regexp.MustCompile(`'([A-Za-z|_-]+)' command`)

// scriptLine finds where a script failed ("script: SHA1, on @user_script:LINE."): Redis 7.0
// reports a command a script may not call that way, without naming it.
var scriptLine = regexp.MustCompile(`script: ([0-9a-f]{40}), on @user_script:([0-9]+)`)

// callOf finds the command a line of Lua calls.
var callOf = regexp.MustCompile(`redis\.call\('([A-Za-z]+)'`)

// srcCapture records the source a Script evaluates; only Eval is called on it.
type srcCapture struct {
	redis.Scripter
	src string
}

func (c *srcCapture) Eval(_ context.Context, src string, _ []string, _ ...any) *redis.Cmd {
	c.src = src
	return redis.NewCmd(context.Background())
}

// scriptCommand returns the command that line n of the tier's script with this SHA-1 calls, or
// "" when it is not one of the tier's scripts or the line calls none.
func scriptCommand(sha, n string) string {
	line, err := strconv.Atoi(n)
	if err != nil {
		return ""
	}
	for _, s := range []*redis.Script{applyScript, eventsScript, epochScript} {
		if s.Hash() != sha {
			continue
		}
		var c srcCapture
		s.Eval(context.Background(), &c, nil)
		lines := strings.Split(c.src, "\n")
		if line < 1 || line > len(lines) {
			return ""
		}
		if m := callOf.FindStringSubmatch(lines[line-1]); m != nil {
			return strings.ToLower(m[1])
		}
	}
	return ""
}

// deniedName returns the command an ACL denial names, directly or by the script line that
// failed, or "" when it names none (a key was denied).
func deniedName(msg string) string {
	if m := deniedCommand.FindStringSubmatch(msg); m != nil {
		return strings.ToLower(m[1])
	}
	if m := scriptLine.FindStringSubmatch(msg); m != nil && strings.Contains(msg, "can't run") {
		return scriptCommand(m[1], m[2])
	}
	return ""
}

// classify turns an error from running cmd into one wrapping ErrDenied, ErrAuth, ErrTLS or
// ErrUnreachable.
func (t *Tier) classify(cmd string, err error) error {
	msg := err.Error()
	user := t.cfg.Username
	if user == "" {
		user = "default"
	}
	switch {
	case strings.Contains(msg, "NOPERM") || strings.Contains(msg, "The user executing the script can't") ||
		strings.Contains(msg, "ACL failure in script"):
		if name := deniedName(msg); name != "" {
			// The reply names the command: it may be another than cmd (one the connect hook
			// or a script ran).
			return fmt.Errorf("%w: Redis user %q may not run %s (%w): grant it with ACL SETUSER %s +%s (the whole rule the tier needs: ACL SETUSER %s %s; see README: Security)",
				ErrDenied, user, strings.ToUpper(name), err, user, name, user, ACLRule(t.cfg.KeyPrefix))
		}
		if cmd == "ping" || strings.Contains(msg, "reading the epoch on connect") {
			// PING touches no key and is the first command: it dialled, and the connect
			// hook's epoch script was denied the epoch key.
			cmd = "evalsha"
		}
		return fmt.Errorf("%w: Redis user %q may not use keys under the prefix %q (running %s: %w): grant them with ACL SETUSER %s %s (see README: Security)",
			ErrDenied, user, t.cfg.KeyPrefix, strings.ToUpper(cmd), err, user, ACLRule(t.cfg.KeyPrefix))
	case strings.Contains(msg, "sentinels") && (strings.Contains(msg, "WRONGPASS") || strings.Contains(msg, "NOAUTH")):
		return fmt.Errorf("%w: the Sentinels refused the Sentinel username %q and password (Config.SentinelUsername, SentinelPassword) (%w)", ErrAuth, t.cfg.SentinelUsername, err)
	case strings.Contains(msg, "WRONGPASS"):
		return fmt.Errorf("%w: Redis refused the username %q and its password (wrong password, unknown or disabled user) (%w)", ErrAuth, user, err)
	case strings.Contains(msg, "NOAUTH"):
		return fmt.Errorf("%w: Redis requires a password and the tier has none (set the Redis username and password) (%w)", ErrAuth, err)
	}
	if kind := tlsFailure(err); kind != "" {
		return fmt.Errorf("%w: %s (%w)", ErrTLS, kind, err)
	}
	hint := ""
	if t.cfg.TLS == nil && (strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset")) {
		hint = " (the server closed the connection: if it accepts only TLS, configure TLS)"
	}
	return fmt.Errorf("%w: %s failed%s: %w", ErrUnreachable, strings.ToUpper(cmd), hint, err)
}

// tlsFailure says what went wrong when err is a failed TLS handshake, and returns "" otherwise.
func tlsFailure(err error) string {
	var (
		verr  *tls.CertificateVerificationError
		ua    x509.UnknownAuthorityError
		he    x509.HostnameError
		ci    x509.CertificateInvalidError
		rhe   tls.RecordHeaderError
		alert tls.AlertError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &verr), errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci), strings.Contains(msg, "x509: "):
		return "the Redis server certificate was not trusted (wrong CA, or a server name or IP address the certificate does not cover, or it expired)"
	case errors.As(err, &rhe), strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the Redis server does not speak TLS on this port"
	case errors.As(err, &alert), strings.Contains(msg, "remote error: tls: "):
		return "the Redis server refused the TLS handshake (a client certificate missing, or not signed by a CA it trusts)"
	case strings.Contains(msg, "tls: "):
		return "the TLS handshake with the Redis server failed"
	}
	return ""
}
