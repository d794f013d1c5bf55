package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/cachewire/cachewire/client"
)

func cmdGet(ctx context.Context, g *globals, args []string) int {
	var minVersion uint64
	fs, err := g.sub("get", args, 1, 1, func(fs *flag.FlagSet) {
		fs.Uint64Var(&minVersion, "min-version", 0, "serve only a value at least this new (the version your write returned)")
	})
	if err != nil {
		return code(err)
	}
	c, err := g.cache()
	if err != nil {
		return g.fail("node "+g.node, err)
	}
	defer c.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	it, err := c.Get(ctx, fs.Arg(0), client.MinVersion(minVersion))
	if err != nil {
		return g.fail("node "+g.node, err)
	}
	g.print(itemJSON{Key: it.Key, Value: string(it.Value), Version: it.Version, Found: it.Found, Tier: string(it.Tier),
		Stale: it.Stale, FreshAsOf: it.FreshAsOf}, func(w io.Writer) {
		if !it.Found {
			fmt.Fprintf(w, "%s: not found (version %d)\n", it.Key, it.Version)
			return
		}
		stale := ""
		if it.Stale {
			stale = " STALE"
		}
		fmt.Fprintf(w, "%s@%d (%s%s): %s\n", it.Key, it.Version, it.Tier, stale, it.Value)
	})
	if !it.Found {
		return exitNotFound
	}
	return exitOK
}

func (g *globals) printWrite(key string, w client.Write, verb string) {
	g.print(writeJSON{Key: key, Version: w.Version, Published: w.Published, CommittedAt: w.CommittedAt}, func(out io.Writer) {
		pub := "published"
		if !w.Published {
			pub = "committed, not yet published"
		}
		fmt.Fprintf(out, "%s %s at version %d (%s)\n", verb, key, w.Version, pub)
	})
}

func cmdPut(ctx context.Context, g *globals, args []string) int {
	var valueFile string
	return g.write(ctx, "put", args, 1, 2, "put", func(fs *flag.FlagSet) {
		fs.StringVar(&valueFile, "value-file", "", "read the value from this file instead of the command line")
	}, func(ctx context.Context, w *client.Writer, a []string, opts []client.WriteOption) (client.Write, error) {
		value, err := g.value(a, valueFile)
		if err != nil {
			return client.Write{}, err
		}
		return w.Put(ctx, a[0], value, opts...)
	})
}

// errValue is a value that could not be read (a usage error).
type errValue struct{ error }

// value returns put's value: the second argument, stdin for "-", or --value-file's bytes.
func (g *globals) value(args []string, file string) ([]byte, error) {
	switch {
	case file != "" && len(args) == 2:
		return nil, errValue{errors.New("give the value as an argument or --value-file, not both")}
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, errValue{fmt.Errorf("--value-file: %w", err)}
		}
		return b, nil
	case len(args) < 2:
		return nil, errValue{errors.New("want KEY VALUE, KEY - (value from stdin) or KEY --value-file F")}
	case args[1] == "-":
		b, err := io.ReadAll(g.in)
		if err != nil {
			return nil, errValue{fmt.Errorf("reading the value from stdin: %w", err)}
		}
		return b, nil
	}
	return []byte(args[1]), nil
}

func cmdDel(ctx context.Context, g *globals, args []string) int {
	return g.write(ctx, "del", args, 1, 1, "deleted", nil, func(ctx context.Context, w *client.Writer, a []string, opts []client.WriteOption) (client.Write, error) {
		return w.Delete(ctx, a[0], opts...)
	})
}

// write runs a writer command: parse --no-wait, def's flags and the arguments, call do, print
// the result.
func (g *globals) write(ctx context.Context, name string, args []string, minArgs, maxArgs int, verb string, def func(*flag.FlagSet),
	do func(context.Context, *client.Writer, []string, []client.WriteOption) (client.Write, error)) int {
	var noWait bool
	fs, err := g.sub(name, args, minArgs, maxArgs, func(fs *flag.FlagSet) {
		fs.BoolVar(&noWait, "no-wait", false, "return once committed, without waiting for Kafka's ack")
		if def != nil {
			def(fs)
		}
	})
	if err != nil {
		return code(err)
	}
	w, err := g.writerClient()
	if err != nil {
		return g.fail("writer "+g.writer, err)
	}
	defer w.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	var opts []client.WriteOption
	if noWait {
		opts = append(opts, client.NoWait())
	}
	res, err := do(ctx, w, fs.Args(), opts)
	var ev errValue
	if errors.As(err, &ev) {
		fmt.Fprintf(g.errOut, "cachectl %s: %v\n", name, ev.error)
		return exitUsage
	}
	if err != nil {
		return g.fail("writer "+g.writer, err)
	}
	g.printWrite(fs.Arg(0), res, verb)
	return exitOK
}

func cmdInvalidate(ctx context.Context, g *globals, args []string) int {
	fs, err := g.sub("invalidate", args, 2, 2, nil)
	if err != nil {
		return code(err)
	}
	version, err := strconv.ParseUint(fs.Arg(1), 10, 64)
	if err != nil || version == 0 {
		fmt.Fprintf(g.errOut, "cachectl invalidate: VERSION must be a positive integer, got %q\n", fs.Arg(1))
		return exitUsage
	}
	c, err := g.cache()
	if err != nil {
		return g.fail("node "+g.node, err)
	}
	defer c.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	if err := c.Invalidate(ctx, fs.Arg(0), version); err != nil {
		return g.fail("node "+g.node, err)
	}
	g.print(map[string]any{"key": fs.Arg(0), "version": version, "invalidated": true}, func(w io.Writer) {
		fmt.Fprintf(w, "published INVALIDATE %s at version %d: nodes holding an older version drop it\n", fs.Arg(0), version)
	})
	return exitOK
}

func cmdEvict(ctx context.Context, g *globals, args []string) int {
	fs, err := g.sub("evict", args, 1, 1, nil)
	if err != nil {
		return code(err)
	}
	c, err := g.cache()
	if err != nil {
		return g.fail("node "+g.node, err)
	}
	defer c.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	if err := c.Evict(ctx, fs.Arg(0)); err != nil {
		return g.fail("node "+g.node, err)
	}
	g.print(map[string]any{"key": fs.Arg(0), "evicted": true}, func(w io.Writer) {
		fmt.Fprintf(w, "published EVICT %s: every node drops its value and keeps its version\n", fs.Arg(0))
	})
	return exitOK
}
