// Package flagenv gives every flag of a command an environment-variable equivalent:
// --kafka-brokers can also be set as CACHEWIRE_KAFKA_BROKERS. A flag given on the command line
// wins over the environment. The usage text lists each flag with its variable and default.
package flagenv

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// EnvName returns the variable for a flag: prefix + upper-cased name with '-' as '_'.
func EnvName(prefix, name string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args into fs, then sets each flag not given in args from its environment variable,
// if set. A bad value in the environment is an error that names the variable.
func Parse(fs *flag.FlagSet, prefix string, args []string, getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	fs.Usage = func() { Usage(fs.Output(), fs, prefix) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		env := EnvName(prefix, f.Name)
		if v := getenv(env); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

// Usage writes every flag with its environment variable, default and help text.
func Usage(w io.Writer, fs *flag.FlagSet, prefix string) {
	fmt.Fprintf(w, "Usage of %s:\n", fs.Name())
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, f := range flags {
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
