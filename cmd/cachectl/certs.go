package main

// cachectl certs makes what the hardened compose file (docker-compose.secure.yml) needs before
// anything starts: a CA, server and client certificates, random passwords and Redis's ACL file,
// in one directory (the compose file's certs volume). It keeps what is already there, so a
// second `docker compose up` rotates nothing, and it re-issues only certificates that could no
// longer be used: missing, not signed by the kept CA, or close to expiry.
//
// The CA and leaves are made here with crypto/x509, not with internal/certgen, which has the
// same templates: certgen keeps its CA's key unexported and cannot load a CA from files, and
// both are needed to sign a missing leaf with the CA kept from an earlier run.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cachewire/cachewire/internal/flagenv"
	"github.com/cachewire/cachewire/redistier"
)

// Validity of what certs issues, and how long before a leaf expires a run re-issues it.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// caName is the stem of the CA's files, ca.crt and ca.key; no leaf may take it.
const caName = "ca"

// certsConfig is one run of cachectl certs.
type certsConfig struct {
	// Dir receives every file; created (mode 0700) when missing.
	Dir string
	// Servers get NAME.crt/NAME.key valid for the host NAME, localhost and 127.0.0.1, for
	// serverAuth and clientAuth; Clients get a certificate with CN NAME for clientAuth only.
	Servers, Clients []string
	// Secrets get NAME.password: 32 hex characters, no newline.
	Secrets []string
	// RedisACL, if set, is the name of the Redis ACL file to write from the passwords
	// redis-RedisAdmin.password and redis-RedisUser.password (made when missing): the default
	// user off, RedisAdmin (if not empty) allowed everything, RedisUser exactly
	// redistier.ACLRule(RedisPrefix).
	RedisACL, RedisUser, RedisAdmin, RedisPrefix string
	// Group, if 0 or more, is the numeric group given every file but ca.key, with keys,
	// passwords and the ACL file readable by that group (0640) and the directory 0750; -1
	// leaves groups alone and makes those files 0600.
	Group int
	// Renew names leaves to re-issue although they are still good, or is ["all"]: every leaf
	// named by Servers and Clients or found in Dir.
	Renew []string
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// validName is what a name must look like: it becomes a file name, a certificate's CN and a
// server's DNS name, and a Redis user name.
var validName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$`)

func checkName(flagName, name string) error {
	if !validName.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("--%s %q: a name is 1-63 letters, digits, '-' and '.', starting and ending with a letter or digit (it becomes a file name and a certificate name)", flagName, name)
	}
	if name == caName {
		return fmt.Errorf("--%s %q: %q is the CA's own file name (ca.crt, ca.key); pick another name", flagName, name, caName)
	}
	return nil
}

func (c *certsConfig) validate() error {
	if c.Dir == "" {
		return errors.New("--dir is required: the directory the CA, certificates and passwords go into (the compose file's certs volume)")
	}
	var errs []error
	leaves := map[string]string{}
	for _, l := range []struct {
		flag  string
		names []string
	}{{"server", c.Servers}, {"client", c.Clients}} {
		for _, n := range l.names {
			if err := checkName(l.flag, n); err != nil {
				errs = append(errs, err)
				continue
			}
			if prev, dup := leaves[n]; dup {
				errs = append(errs, fmt.Errorf("--%s %q: already named by --%s; one name is one certificate (NAME.crt)", l.flag, n, prev))
			}
			leaves[n] = l.flag
		}
	}
	for _, n := range c.Secrets {
		if err := checkName("secrets", n); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range c.Renew {
		if n == "all" {
			if len(c.Renew) > 1 {
				errs = append(errs, errors.New(`--renew: "all" stands alone, or name the certificates`))
			}
			continue
		}
		if err := checkName("renew", n); err != nil {
			errs = append(errs, err)
		}
	}
	if c.RedisACL != "" {
		if err := checkName("redis-acl", c.RedisACL); err != nil {
			errs = append(errs, err)
		}
		for _, ext := range []string{".crt", ".key", ".password"} {
			if strings.HasSuffix(c.RedisACL, ext) {
				errs = append(errs, fmt.Errorf("--redis-acl %q: a %s name is a certificate's, key's or password's; pick another, such as users.acl", c.RedisACL, ext))
			}
		}
		if err := checkName("redis-user", c.RedisUser); err != nil {
			errs = append(errs, err)
		}
		if c.RedisAdmin != "" {
			if err := checkName("redis-admin", c.RedisAdmin); err != nil {
				errs = append(errs, err)
			} else if c.RedisAdmin == c.RedisUser {
				errs = append(errs, fmt.Errorf("--redis-admin and --redis-user are both %q: the tier's user must not be the admin", c.RedisUser))
			}
		}
		// ACL rules are separated by spaces, one user a line.
		if strings.ContainsAny(c.RedisPrefix, " \t\r\n") {
			errs = append(errs, fmt.Errorf("--redis-prefix %q: a key prefix in an ACL file cannot hold white space", c.RedisPrefix))
		}
	}
	if c.Group < -1 {
		errs = append(errs, fmt.Errorf("--group %d: want a numeric group id (0 or more), or -1 to leave groups alone", c.Group))
	}
	return errors.Join(errs...)
}

func cmdCerts(_ context.Context, g *globals, args []string) int {
	c := certsConfig{Group: -1}
	var servers, clients, secrets, renew flagenv.List
	_, err := g.sub("certs", args, 0, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&c.Dir, "dir", "", "directory to write into, created when missing (required)")
		fs.Var(&servers, "server", "server certificates to make, comma separated: NAME.crt and NAME.key, valid for the host NAME, localhost and 127.0.0.1")
		fs.Var(&clients, "client", "client certificates to make, comma separated: NAME.crt and NAME.key with subject CN=NAME (the client's name to --write-clients)")
		fs.Var(&secrets, "secrets", "random passwords to make, comma separated: NAME.password, 32 hex characters without a newline")
		fs.StringVar(&c.RedisACL, "redis-acl", "", "write this Redis ACL file (aclfile) into --dir: default user off, --redis-admin, and --redis-user with exactly the cache tier's rule; their passwords are redis-USER.password, made when missing")
		fs.StringVar(&c.RedisUser, "redis-user", "cachewire", "the cache tier's Redis user in --redis-acl (the nodes' --redis-username)")
		fs.StringVar(&c.RedisAdmin, "redis-admin", "admin", `an administrator in --redis-acl, allowed every command ("" for none)`)
		fs.StringVar(&c.RedisPrefix, "redis-prefix", "cw:", "key prefix the --redis-user may touch (the nodes' --redis-prefix)")
		fs.IntVar(&c.Group, "group", -1, "numeric group to own the files (not ca.key), with keys, passwords and the ACL file group-readable (0640), for services running as other users; -1: keys 0600, groups unchanged")
		fs.Var(&renew, "renew", `re-issue these certificates now although they are still good, comma separated, or "all" (keeps the CA and the passwords; a leaf found in --dir keeps its names)`)
	})
	if err != nil {
		return code(err)
	}
	c.Servers, c.Clients, c.Secrets, c.Renew = servers, clients, secrets, renew
	if err := c.validate(); err != nil {
		fmt.Fprintf(g.errOut, "cachectl certs: %v\n", err)
		return exitUsage
	}
	if err := makeCerts(c, g.out); err != nil {
		fmt.Fprintf(g.errOut, "cachectl certs: %v\n", err)
		return exitError
	}
	return exitOK
}

// sensitivity is how far a file may be read.
type sensitivity int

const (
	public  sensitivity = iota // certificates: 0644
	secret                     // keys, passwords, ACL file: 0600, or 0640 to --group
	private                    // the CA's key: 0600, whatever --group says; only this step needs it
)

// files writes into one directory and reports each file, as "wrote PATH" or "kept PATH".
type files struct {
	dir   string
	group int
	out   io.Writer
}

func (f *files) path(name string) string { return filepath.Join(f.dir, name) }

func (f *files) mode(s sensitivity) fs.FileMode {
	switch {
	case s == public:
		return 0o644
	case s == secret && f.group >= 0:
		return 0o640
	}
	return 0o600
}

// exists reports whether name is a file in the directory.
func (f *files) exists(name string) (bool, error) {
	fi, err := os.Stat(f.path(name))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case !fi.Mode().IsRegular():
		return false, fmt.Errorf("%s is not a regular file: move it away", f.path(name))
	}
	return true, nil
}

// put writes name through a temporary file and a rename, so that a binary reloading it (the
// listeners poll their certificate files) never reads half of it.
func (f *files) put(name string, data []byte, s sensitivity, note string) error {
	tmp, err := os.CreateTemp(f.dir, "."+name+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := f.own(tmp.Name(), s); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), f.path(name)); err != nil {
		return err
	}
	if note != "" {
		note = " (" + note + ")"
	}
	fmt.Fprintf(f.out, "wrote %s%s\n", f.path(name), note)
	return nil
}

// keep reports a file left as it is, after giving it the mode and group this run asks for (so
// that adding --group later opens the existing files to that group).
func (f *files) keep(name string, s sensitivity) error {
	if f.group >= 0 {
		if err := f.own(f.path(name), s); err != nil {
			return err
		}
	}
	fmt.Fprintf(f.out, "kept  %s\n", f.path(name))
	return nil
}

func (f *files) own(path string, s sensitivity) error {
	if f.group >= 0 && s != private {
		if err := os.Chown(path, -1, f.group); err != nil {
			return fmt.Errorf("give %s to group %d: %w (run as root, or as a member of the group)", path, f.group, err)
		}
	}
	return os.Chmod(path, f.mode(s))
}

// authority is the CA: its certificate, and its key when ca.key is there.
type authority struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	fresh   bool // made in this run: every leaf must be (re-)issued
}

func makeCerts(c certsConfig, out io.Writer) error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	f := &files{dir: c.Dir, group: c.Group, out: out}
	if c.Group >= 0 {
		// Services that read the files run as other users; only the group may look inside.
		if err := os.Chown(c.Dir, -1, c.Group); err != nil {
			return fmt.Errorf("give %s to group %d: %w (run as root, or as a member of the group)", c.Dir, c.Group, err)
		}
		if err := os.Chmod(c.Dir, 0o750); err != nil {
			return err
		}
	}
	ca, err := loadOrMakeCA(f, c.Now())
	if err != nil {
		return err
	}
	leaves, err := leavesToMake(f, c)
	if err != nil {
		return err
	}
	for _, l := range leaves {
		if err := ensureLeaf(f, ca, l, c); err != nil {
			return err
		}
	}
	secrets := slices.Clone(c.Secrets)
	if c.RedisACL != "" {
		if c.RedisAdmin != "" {
			secrets = append(secrets, "redis-"+c.RedisAdmin)
		}
		secrets = append(secrets, "redis-"+c.RedisUser)
	}
	seen := map[string]bool{}
	for _, s := range secrets {
		if seen[s] {
			continue
		}
		seen[s] = true
		if err := ensureSecret(f, s); err != nil {
			return err
		}
	}
	if c.RedisACL != "" {
		return writeRedisACL(f, c)
	}
	return nil
}

// loadOrMakeCA keeps ca.crt (and ca.key, if there) or, when there is no ca.crt, makes a CA.
func loadOrMakeCA(f *files, now time.Time) (*authority, error) {
	have, err := f.exists(caName + ".crt")
	if err != nil {
		return nil, err
	}
	if !have {
		return makeCA(f, now)
	}
	raw, err := os.ReadFile(f.path(caName + ".crt"))
	if err != nil {
		return nil, err
	}
	cert, err := parseCert(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (remove it to make a new CA; every certificate is then re-issued)", f.path(caName+".crt"), err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate (remove it to make a new CA)", f.path(caName+".crt"))
	}
	ca := &authority{cert: cert, certPEM: raw}
	if err := f.keep(caName+".crt", public); err != nil {
		return nil, err
	}
	haveKey, err := f.exists(caName + ".key")
	if err != nil || !haveKey {
		return ca, err // without its key the CA can keep leaves but issue none; ensureLeaf says so
	}
	rawKey, err := os.ReadFile(f.path(caName + ".key"))
	if err != nil {
		return nil, err
	}
	key, err := parseKey(rawKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.path(caName+".key"), err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("%s is not the key of %s: restore the matching pair, or remove both to make a new CA", f.path(caName+".key"), f.path(caName+".crt"))
	}
	ca.key = key
	return ca, f.keep(caName+".key", private)
}

func makeCA(f *files, now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               pkix.Name{CommonName: "cachewire compose CA", Organization: []string{"cachewire"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // it signs leaves only, never another CA
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	ca := &authority{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key, fresh: true}
	// The key first: a CA certificate without its key could not issue the next missing leaf.
	if err := f.put(caName+".key", keyPEM, private, ""); err != nil {
		return nil, err
	}
	return ca, f.put(caName+".crt", ca.certPEM, public, "")
}

// leaf is a certificate to have: its name (CN and file stem), the hosts it serves, or none for
// a client certificate.
type leaf struct {
	name   string
	hosts  []string
	client bool
}

// leavesToMake lists the flags' leaves and, with --renew all, the leaves already in the
// directory, which keep the names and use they were issued with.
func leavesToMake(f *files, c certsConfig) ([]leaf, error) {
	var out []leaf
	named := map[string]bool{}
	for _, n := range c.Servers {
		out = append(out, leaf{name: n, hosts: []string{n, "localhost", "127.0.0.1"}})
		named[n] = true
	}
	for _, n := range c.Clients {
		out = append(out, leaf{name: n, client: true})
		named[n] = true
	}
	renewAll := slices.Equal(c.Renew, []string{"all"})
	found := map[string]leaf{}
	if len(c.Renew) > 0 {
		entries, err := os.ReadDir(f.dir)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			stem, ok := strings.CutSuffix(e.Name(), ".crt")
			if !ok || stem == caName || !e.Type().IsRegular() || checkName("renew", stem) != nil {
				continue
			}
			raw, err := os.ReadFile(f.path(e.Name()))
			if err != nil {
				return nil, err
			}
			cert, err := parseCert(raw)
			if err != nil {
				return nil, fmt.Errorf("%s: %w (remove it, or name it with --server or --client to re-issue it)", f.path(e.Name()), err)
			}
			l := leaf{name: stem, client: !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth)}
			l.hosts = append(l.hosts, cert.DNSNames...)
			for _, ip := range cert.IPAddresses {
				l.hosts = append(l.hosts, ip.String())
			}
			found[stem] = l
		}
	}
	if renewAll {
		names := make([]string, 0, len(found))
		for n := range found {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if !named[n] {
				out = append(out, found[n])
			}
		}
		return out, nil
	}
	for _, n := range c.Renew {
		if named[n] {
			continue
		}
		l, ok := found[n]
		if !ok {
			return nil, fmt.Errorf("--renew %s: there is no %s to renew; name it with --server or --client to issue it", n, f.path(n+".crt"))
		}
		out = append(out, l)
	}
	return out, nil
}

// ensureLeaf keeps NAME.crt and NAME.key when they are still good, or issues them.
func ensureLeaf(f *files, ca *authority, l leaf, c certsConfig) error {
	why, err := reissueReason(f, ca, l, c)
	if err != nil {
		return err
	}
	if why == "-" {
		if err := f.keep(l.name+".key", secret); err != nil {
			return err
		}
		return f.keep(l.name+".crt", public)
	}
	if ca.key == nil {
		return fmt.Errorf("%s is missing, so %s cannot be issued (%s): restore it, or remove %s to make a new CA (every certificate is then re-issued)",
			f.path(caName+".key"), f.path(l.name+".crt"), why, f.path(caName+".crt"))
	}
	certPEM, keyPEM, err := issue(ca, l, c.Now())
	if err != nil {
		return err
	}
	note := why
	if why == "new" {
		note = ""
	}
	// The key first: a listener that reloads sees the new pair complete once the certificate
	// changes (until then it keeps the old certificate, which no longer matches the new key).
	if err := f.put(l.name+".key", keyPEM, secret, note); err != nil {
		return err
	}
	return f.put(l.name+".crt", certPEM, public, note)
}

// reissueReason says why l must be issued ("new", or what is wrong with the files), or "-"
// when the files in the directory are still good.
func reissueReason(f *files, ca *authority, l leaf, c certsConfig) (string, error) {
	haveCert, err := f.exists(l.name + ".crt")
	if err != nil {
		return "", err
	}
	haveKey, err := f.exists(l.name + ".key")
	if err != nil {
		return "", err
	}
	switch {
	case !haveCert && !haveKey:
		return "new", nil
	case ca.fresh:
		return "re-issued: new CA", nil
	case !haveCert || !haveKey:
		return "re-issued: its pair was incomplete", nil
	case slices.Contains(c.Renew, "all") || slices.Contains(c.Renew, l.name):
		return "renewed on request", nil
	}
	rawCert, err := os.ReadFile(f.path(l.name + ".crt"))
	if err != nil {
		return "", err
	}
	rawKey, err := os.ReadFile(f.path(l.name + ".key"))
	if err != nil {
		return "", err
	}
	cert, err := parseCert(rawCert)
	if err != nil {
		return "re-issued: the certificate did not parse", nil
	}
	key, err := parseKey(rawKey)
	if err != nil || !publicKeysEqual(key.Public(), cert.PublicKey) {
		return "re-issued: the key did not match", nil
	}
	usage := x509.ExtKeyUsageServerAuth
	if l.client {
		usage = x509.ExtKeyUsageClientAuth
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: c.Now()}
	if _, err := cert.Verify(opts); err != nil {
		return "re-issued: not valid under ca.crt", nil
	}
	if cert.Subject.CommonName != l.name {
		return "re-issued: another subject", nil
	}
	for _, h := range l.hosts {
		if cert.VerifyHostname(h) != nil {
			return "re-issued: not valid for " + h, nil
		}
	}
	if cert.NotAfter.Sub(c.Now()) < renewBefore {
		return "renewed: it expires " + cert.NotAfter.UTC().Format(time.DateOnly), nil
	}
	return "-", nil
}

// issue signs l: ECDSA P-256, a PKCS #8 key (which Kafka's PEM keystore, redis-server and Go all
// read), clientAuth, and serverAuth for a server.
func issue(ca *authority, l leaf, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(),
		Subject:      pkix.Name{CommonName: l.name, Organization: []string{"cachewire"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if !l.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	for _, h := range l.hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// ensureSecret keeps NAME.password or writes a new one: 16 random bytes as 32 hex characters,
// with no newline. The binaries' --…-password-file readers would drop one, but Kafka's
// DirectoryConfigProvider, which puts a file into the broker's JAAS configuration, takes the
// file's bytes as they are: a newline would be part of the password.
func ensureSecret(f *files, name string) error {
	file := name + ".password"
	have, err := f.exists(file)
	if err != nil {
		return err
	}
	if have {
		raw, err := os.ReadFile(f.path(file))
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(raw)) > 0 {
			return f.keep(file, secret)
		}
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	return f.put(file, []byte(hex.EncodeToString(b[:])), secret, "")
}

// redisACLLines is the ACL file: redis-server reads "user" lines only (no comments), so what the
// file is for is said here and in the compose file.
func redisACLLines(c certsConfig, password func(user string) (string, error)) ([]string, error) {
	lines := []string{"user default off"}
	if c.RedisAdmin != "" {
		p, err := password(c.RedisAdmin)
		if err != nil {
			return nil, err
		}
		lines = append(lines, "user "+c.RedisAdmin+" on >"+p+" ~* &* +@all")
	}
	p, err := password(c.RedisUser)
	if err != nil {
		return nil, err
	}
	return append(lines, "user "+c.RedisUser+" on >"+p+" "+redistier.ACLRule(c.RedisPrefix)), nil
}

// writeRedisACL writes the ACL file from the passwords, or keeps it when it already says the
// same: it is derived, so a changed --redis-prefix or password rewrites it.
func writeRedisACL(f *files, c certsConfig) error {
	lines, err := redisACLLines(c, func(user string) (string, error) {
		raw, err := os.ReadFile(f.path("redis-" + user + ".password"))
		return strings.TrimSpace(string(raw)), err
	})
	if err != nil {
		return err
	}
	want := []byte(strings.Join(lines, "\n") + "\n")
	if have, err := os.ReadFile(f.path(c.RedisACL)); err == nil && bytes.Equal(have, want) {
		return f.keep(c.RedisACL, secret)
	}
	return f.put(c.RedisACL, want, secret, "")
}

func parseCert(raw []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE in it")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parseKey(raw []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM PRIVATE KEY (PKCS #8) in it")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", k)
	}
	return s, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func serialNumber() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err) // crypto/rand does not fail on the systems Go supports
	}
	return n
}
