package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/cachewire/cachewire/client"
)

func cmdGet(ctx context.Context, g *globals, args []string) int {
	var minVersion uint64
	fs, ok := g.sub("get", args, 1, "KEY", func(fs *flag.FlagSet) {
		fs.Uint64Var(&minVersion, "min-version", 0, "serve only a value at least this new")
	})
	if !ok {
		return exitUsage
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
	return g.write(ctx, "put", args, 2, "KEY VALUE", "put", func(ctx context.Context, w *client.Writer, a []string, opts []client.WriteOption) (client.Write, error) {
		return w.Put(ctx, a[0], []byte(a[1]), opts...)
	})
}

func cmdDel(ctx context.Context, g *globals, args []string) int {
	return g.write(ctx, "del", args, 1, "KEY", "deleted", func(ctx context.Context, w *client.Writer, a []string, opts []client.WriteOption) (client.Write, error) {
		return w.Delete(ctx, a[0], opts...)
	})
}

// write runs a writer command: parse --no-wait and the arguments, call do, print the result.
func (g *globals) write(ctx context.Context, name string, args []string, nargs int, argNames, verb string,
	do func(context.Context, *client.Writer, []string, []client.WriteOption) (client.Write, error)) int {
	var noWait bool
	fs, ok := g.sub(name, args, nargs, argNames, func(fs *flag.FlagSet) {
		fs.BoolVar(&noWait, "no-wait", false, "return once committed, without waiting for Kafka's ack")
	})
	if !ok {
		return exitUsage
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
	if err != nil {
		return g.fail("writer "+g.writer, err)
	}
	g.printWrite(fs.Arg(0), res, verb)
	return exitOK
}

func cmdInvalidate(ctx context.Context, g *globals, args []string) int {
	fs, ok := g.sub("invalidate", args, 2, "KEY VERSION", nil)
	if !ok {
		return exitUsage
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
		fmt.Fprintf(w, "invalidated %s up to version %d on every node\n", fs.Arg(0), version)
	})
	return exitOK
}
