// Package flagenv gives every flag of a command an environment-variable equivalent under the
// command's own prefix: cachenode's --kafka-brokers can also be set as
// CACHEWIRE_NODE_KAFKA_BROKERS, the writer's as CACHEWIRE_WRITER_KAFKA_BROKERS, so one
// environment can configure both. A flag given on the command line wins over the environment.
// The usage text lists each flag with its variable and default. Every command gets --version.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cachewire/cachewire/internal/version"
)

// EnvName returns the variable for a flag: prefix + upper-cased name with '-' as '_'.
func EnvName(prefix, name string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// ErrVersion is returned by Parse after --version printed the build: the caller exits 0. It
// wraps flag.ErrHelp, so a caller that treats help as success needs nothing more.
var ErrVersion = fmt.Errorf("version printed: %w", flag.ErrHelp)

// Parse parses args into fs, then sets each flag not given in args from its environment variable,
// if set. A bad value in the environment is an error that names the variable. It is
// (&Command{Prefix: prefix}).Parse.
func Parse(fs *flag.FlagSet, prefix string, args []string, getenv func(string) string) error {
	return (&Command{Prefix: prefix}).Parse(fs, args, getenv)
}

// Command is how one binary reads its flags: its environment prefix, the older prefix it still
// reads for one release, and the deprecated flag names it still accepts.
type Command struct {
	// Prefix prefixes each flag's environment variable: CACHEWIRE_NODE_ makes --grpc-addr
	// CACHEWIRE_NODE_GRPC_ADDR.
	Prefix string
	// Legacy is an older prefix, read when the Prefix variable is unset, with a warning.
	Legacy string
	// Stdout receives --version's line. If nil, os.Stdout.
	Stdout io.Writer
	// Environ lists the environment, to warn about variables under Prefix that name no flag
	// (a typo would otherwise be ignored). If nil, os.Environ.
	Environ func() []string

	warnings []string
	secrets  []*Secret
}

// Alias accepts --old as a deprecated spelling of the already defined flag --name: setting it
// sets --name and records a warning.
func (c *Command) Alias(fs *flag.FlagSet, old, name string) {
	f := fs.Lookup(name)
	fs.Var(&alias{f: f, c: c, old: old}, old, "deprecated: use --"+name)
}

type alias struct {
	f   *flag.Flag
	c   *Command
	old string
}

func (a *alias) String() string {
	if a == nil || a.f == nil {
		return ""
	}
	return a.f.Value.String()
}

func (a *alias) Set(s string) error {
	a.c.warnings = append(a.c.warnings, fmt.Sprintf("--%s is deprecated and will be removed in the next release: use --%s", a.old, a.f.Name))
	return a.f.Value.Set(s)
}

// Parse parses args into fs, then sets each flag not given in args from its environment variable
// (Prefix, then Legacy), if set. A bad value in the environment is an error that names the
// variable. It defines --version, which prints the build (package version) and returns
// ErrVersion.
func (c *Command) Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	var showVersion bool
	if fs.Lookup("version") == nil {
		fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	}
	// A secret on the command line is refused before the flag package could echo it.
	for _, a := range args {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		for _, s := range c.secrets {
			if strings.HasPrefix(a, "-") && name == s.name {
				err := fmt.Errorf("--%s: a secret is never taken on the command line (ps shows it to every user): set %s or --%s-file", s.name, s.env, s.name)
				fmt.Fprintln(fs.Output(), err)
				return err
			}
		}
	}
	// The flag package prints the error itself; the whole usage only for --help.
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			Usage(fs.Output(), fs, c.Prefix)
		} else {
			fmt.Fprintf(fs.Output(), "Run '%s --help' for every flag.\n", fs.Name())
		}
		return err
	}
	if showVersion {
		out := c.Stdout
		if out == nil {
			out = os.Stdout
		}
		fmt.Fprintln(out, version.String(fs.Name()))
		return ErrVersion
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.unknownVariables(fs)
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		_, isSecret := f.Value.(*secretFlag)
		if _, isAlias := f.Value.(*alias); err != nil || set[f.Name] || isAlias || isSecret || f.Name == "version" {
			return
		}
		env := EnvName(c.Prefix, f.Name)
		v := getenv(env)
		if c.Legacy != "" && c.Legacy != c.Prefix {
			old := EnvName(c.Legacy, f.Name)
			switch ov := getenv(old); {
			case ov != "" && v != "":
				c.warnings = append(c.warnings, fmt.Sprintf("%s is ignored: %s is set", old, env))
			case ov != "":
				c.warnings = append(c.warnings, fmt.Sprintf("%s is deprecated and will be removed in the next release: use %s", old, env))
				v, env = ov, old
			}
		}
		if v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	for _, s := range c.secrets {
		if err == nil {
			err = s.resolve(getenv)
		}
	}
	return err
}

// unknownVariables warns about each variable under Prefix that is no flag's (nor an old name
// of one under Legacy, which can share the prefix: CACHEWIRE_NODE_ID was --node-id's).
func (c *Command) unknownVariables(fs *flag.FlagSet) {
	if c.Prefix == "" {
		return
	}
	environ := c.Environ
	if environ == nil {
		environ = os.Environ
	}
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		known[EnvName(c.Prefix, f.Name)] = true
		if c.Legacy != "" {
			known[EnvName(c.Legacy, f.Name)] = true
		}
	})
	for _, kv := range environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, c.Prefix) && !known[name] {
			c.warnings = append(c.warnings, fmt.Sprintf("%s is set but %s has no such flag (--%s): ignored", name, fs.Name(),
				strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, c.Prefix)), "_", "-")))
		}
	}
}

// Warnings returns what Parse found deprecated, one line each, for the caller to log once its
// logger exists.
func (c *Command) Warnings() []string { return c.warnings }

// LogWarnings logs each of Warnings at warn level.
func (c *Command) LogWarnings(log *slog.Logger) {
	for _, w := range c.warnings {
		log.Warn(w)
	}
}

// Usage writes every flag with its environment variable, default and help text.
func Usage(w io.Writer, fs *flag.FlagSet, prefix string) {
	fmt.Fprintf(w, "Usage of %s:\n", fs.Name())
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, f := range flags {
		if _, isAlias := f.Value.(*alias); isAlias || f.Name == "version" {
			fmt.Fprintf(w, "  --%s\n      %s\n", f.Name, f.Usage)
			continue
		}
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s (env %s, default %s)\n      %s\n", f.Name, EnvName(prefix, f.Name), def, f.Usage)
	}
}

// Logger returns a slog logger writing format ("text" or "json") at level ("debug", "info",
// "warn" or "error") to w; the error names the flag that holds the bad value.
func Logger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// List is a comma-separated list flag.
type List []string

// String returns the list joined with commas.
func (l *List) String() string { return strings.Join(*l, ",") }

// Set replaces the list with the comma-separated items of s (empty items dropped).
func (l *List) Set(s string) error {
	*l = nil
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

// TableRows turns the output of Usage into the rows of a Markdown table
// (| `--flag` | `ENV` | `default` | help |), the form the README documents flags in.
func TableRows(usage string) []string {
	var rows []string
	lines := strings.Split(usage, "\n")
	for i, line := range lines {
		if !strings.HasPrefix(line, "  --") || !strings.HasSuffix(line, ")") {
			continue
		}
		name := strings.Fields(line)[0]
		envStart := strings.Index(line, "(env ") + len("(env ")
		envEnd := strings.Index(line[envStart:], ",") + envStart
		def := line[strings.Index(line, ", default ")+len(", default ") : len(line)-1]
		help := ""
		if i+1 < len(lines) {
			help = strings.TrimSpace(lines[i+1])
		}
		rows = append(rows, fmt.Sprintf("| `%s` | `%s` | `%s` | %s |", name, line[envStart:envEnd], def, help))
	}
	return rows
}

// PrintError prints err for command cmd on w, as "cmd: err", without repeating the command's
// name when the error already starts with it (the writer package's errors begin "writer: ").
func PrintError(w io.Writer, cmd string, err error) {
	msg := err.Error()
	if !strings.HasPrefix(msg, cmd+": ") {
		msg = cmd + ": " + msg
	}
	fmt.Fprintln(w, msg)
}

// Check collects flag validation errors, so that one run reports every bad flag at once.
type Check struct{ errs []error }

// Addr requires value to be host:port with a numeric port (the host may be empty: ":7070").
// "-" is accepted when allowOff (a listener that can be disabled).
func (c *Check) Addr(flagName, value string, allowOff bool) {
	if allowOff && value == "-" {
		return
	}
	if err := checkAddr(value); err != nil {
		c.errs = append(c.errs, fmt.Errorf("--%s %q: %w", flagName, value, err))
	}
}

// Addrs requires every item of values to be host:port with a numeric port.
func (c *Check) Addrs(flagName string, values []string) {
	for _, v := range values {
		if err := checkAddr(v); err != nil {
			c.errs = append(c.errs, fmt.Errorf("--%s %q: %w", flagName, v, err))
		}
	}
}

func checkAddr(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want host:port (%v)", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// Positive requires a duration above zero.
func (c *Check) Positive(flagName string, d time.Duration) {
	if d <= 0 {
		c.errs = append(c.errs, fmt.Errorf("--%s %v: want a duration above zero", flagName, d))
	}
}

// NotNegative requires a duration of zero or more.
func (c *Check) NotNegative(flagName string, d time.Duration) {
	if d < 0 {
		c.errs = append(c.errs, fmt.Errorf("--%s %v: must not be negative", flagName, d))
	}
}

// Size requires a count or size of at least min.
func (c *Check) Size(flagName string, n int64, min int64) {
	if n < min {
		c.errs = append(c.errs, fmt.Errorf("--%s %d: want at least %d", flagName, n, min))
	}
}

// Err returns every problem found, joined, or nil.
func (c *Check) Err() error { return errors.Join(c.errs...) }

// Secret is a password or token that a command reads from its environment variable or from a
// file named by --NAME-file, never from a command-line value (which every user of the machine
// sees in ps) and never from a flag default. Its String, and so --help, never shows it.
type Secret struct {
	name, env string
	file      string
	value     string
	source    string
}

// Secret defines --NAME-file (a file holding the secret; one trailing newline is dropped) and
// reads the variable PREFIX+NAME, and defines --NAME only to refuse it with a message saying
// where the secret goes instead. Parse resolves it; setting both the variable and the file is
// an error.
func (c *Command) Secret(fs *flag.FlagSet, name, usage string) *Secret {
	s := &Secret{name: name, env: EnvName(c.Prefix, name)}
	fs.Var(&secretFlag{s: s}, name, usage+": set it in the environment variable or with --"+name+"-file, never on the command line")
	fs.StringVar(&s.file, name+"-file", "", "file holding the "+strings.ReplaceAll(name, "-", " ")+" (mounted secret); the environment variable "+s.env+" is the other way to set it")
	c.secrets = append(c.secrets, s)
	return s
}

func (s *Secret) resolve(getenv func(string) string) error {
	v := getenv(s.env)
	switch {
	case v != "" && s.file != "":
		return fmt.Errorf("%s and --%s-file are both set: set one", s.env, s.name)
	case v != "":
		s.value, s.source = v, s.env
	case s.file != "":
		raw, err := os.ReadFile(s.file)
		if err != nil {
			return fmt.Errorf("--%s-file: %w", s.name, err)
		}
		v = strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
		if v == "" {
			return fmt.Errorf("--%s-file %s: the file is empty", s.name, s.file)
		}
		s.value, s.source = v, "--"+s.name+"-file "+s.file
	}
	return nil
}

// Value returns the secret, or "" when neither the variable nor the file is set.
func (s *Secret) Value() string { return s.value }

// Source says where the secret came from (the variable's name or the file), for logs; "" when
// unset. It never contains the secret.
func (s *Secret) Source() string { return s.source }

// String hides the value.
func (s *Secret) String() string {
	if s.value == "" {
		return ""
	}
	return "(set from " + s.source + ")"
}

// secretFlag is --NAME of a Secret: it refuses any value given on the command line.
type secretFlag struct{ s *Secret }

func (f *secretFlag) String() string { return "" }

func (f *secretFlag) Set(string) error {
	return fmt.Errorf("a secret is never taken on the command line (ps shows it to every user): set %s or --%s-file", f.s.env, f.s.name)
}
