package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cachewire/cachewire/internal/topics"
	"github.com/cachewire/cachewire/invalidation"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

func (g *globals) stats(ctx context.Context) (*pb.StatsResponse, int) {
	c, err := g.cache()
	if err != nil {
		return nil, g.fail("node "+g.node, err)
	}
	defer c.Close()
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	s, err := c.Stats(ctx)
	if err != nil {
		return nil, g.fail("node "+g.node, err)
	}
	return s, exitOK
}

func cmdStats(ctx context.Context, g *globals, args []string) int {
	if _, err := g.sub("stats", args, 0, 0, nil); err != nil {
		return code(err)
	}
	s, code := g.stats(ctx)
	if s == nil {
		return code
	}
	if g.json {
		g.print(statsToJSON(s), nil)
		return exitOK
	}
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "node\t%s\n", s.NodeId)
	fmt.Fprintf(tw, "L1\thits %d\tmisses %d\tentries %d\tbytes %d\tstale fills rejected %d\n",
		s.L1.GetHits(), s.L1.GetMisses(), s.L1.GetEntries(), s.L1.GetBytes(), s.L1.GetStaleFillsRejected())
	if s.L2 != nil {
		fmt.Fprintf(tw, "L2\thits %d\tmisses %d\t\t\tstale fills rejected %d\n", s.L2.GetHits(), s.L2.GetMisses(), s.L2.GetStaleFillsRejected())
	}
	fmt.Fprintf(tw, "origin loads\t%d\n", s.OriginLoads)
	fmt.Fprintf(tw, "events\tapplied %d\tignored %d\tinvalid %d\n", s.EventsApplied, s.EventsIgnored, s.EventsInvalid)
	return flushCode(tw)
}

func flushCode(tw *tabwriter.Writer) int {
	if err := tw.Flush(); err != nil {
		return exitError
	}
	return exitOK
}

func cmdLag(ctx context.Context, g *globals, args []string) int {
	if _, err := g.sub("lag", args, 0, 0, nil); err != nil {
		return code(err)
	}
	s, code := g.stats(ctx)
	if s == nil {
		return code
	}
	rows := lagRows(s)
	g.print(rows, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tOFFSET\tLOG END\tLAG\tCAUGHT UP\tL2 COMMITTED\tL2 CAUGHT UP")
		ago := func(s float64) string {
			if s < 0 {
				return "never"
			}
			return fmt.Sprintf("%.3fs ago", s)
		}
		// A zero L2 time means the node does not use L2 for the partition now: the group has not
		// caught up since start, a reset, a new Redis epoch or an EVICT it must apply first.
		l2ago := func(s float64) string {
			if s < 0 {
				return "not now (waiting for the group)"
			}
			return ago(s)
		}
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\n", r.Topic, r.Partition, r.Offset, r.HighWatermark, r.Lag,
				ago(r.AgeSeconds), r.L2Committed, l2ago(r.L2AgeSeconds))
		}
		tw.Flush()
	})
	return exitOK
}

// lagRows is the per-partition position and freshness of a node's stats.
func lagRows(s *pb.StatsResponse) []lagJSON {
	now := time.Now()
	rows := make([]lagJSON, 0, len(s.Partitions))
	for _, p := range s.Partitions {
		r := lagJSON{Topic: p.Topic, Partition: p.Partition, Offset: p.Offset, HighWatermark: p.HighWatermark,
			Lag: max(p.HighWatermark-p.Offset, 0), AgeSeconds: -1, L2Committed: p.L2CommittedOffset, L2AgeSeconds: -1}
		if p.CaughtUpAt != nil {
			r.CaughtUpAt = p.CaughtUpAt.AsTime()
			r.AgeSeconds = now.Sub(r.CaughtUpAt).Seconds()
		}
		if p.L2CaughtUpAt != nil {
			r.L2CaughtUpAt = p.L2CaughtUpAt.AsTime()
			r.L2AgeSeconds = now.Sub(r.L2CaughtUpAt).Seconds()
		}
		rows = append(rows, r)
	}
	return rows
}

func cmdTail(ctx context.Context, g *globals, args []string) int {
	var fromBeginning, untilEnd bool
	var count int
	if _, err := g.sub("tail", args, 0, 0, func(fs *flag.FlagSet) {
		fs.BoolVar(&fromBeginning, "from-beginning", false, "start at the oldest event instead of the log end")
		fs.IntVar(&count, "count", 0, "stop after this many events (0: no limit)")
		fs.BoolVar(&untilEnd, "until-end", false, "stop at the log end as it was when tail started, instead of waiting for new events")
	}); err != nil {
		return code(err)
	}
	if len(g.brokers) == 0 {
		fmt.Fprintln(g.errOut, "cachectl tail: --kafka-brokers (or "+envPrefix+"KAFKA_BROKERS) is required")
		return exitUsage
	}
	// Ask for the topic first: a missing topic is a wrong --topic, not an unreachable Kafka.
	actx, acancel := g.ctx(ctx)
	ends, err := topics.Admin{Brokers: g.brokers, Conn: g.kafka}.EndOffsets(actx, g.topic)
	acancel()
	switch {
	case errors.Is(err, topics.ErrNotFound):
		fmt.Fprintf(g.errOut, "cachectl tail: topic %q does not exist on Kafka at %s\ncachectl: name the event topic with --topic (or %sTOPIC)\n",
			g.topic, strings.Join(g.brokers, ","), envPrefix)
		return exitInvalid
	case err != nil:
		fmt.Fprintf(g.errOut, "cachectl tail: Kafka at %s: %v\ncachectl: is Kafka running and reachable at %s? (--kafka-brokers)\n",
			strings.Join(g.brokers, ","), err, strings.Join(g.brokers, ","))
		return exitUnavailable
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan eventJSON, 1024)
	sub, err := invalidation.NewSubscriber(invalidation.SubscriberConfig{
		Brokers: g.brokers, Kafka: g.kafka, Topics: []string{g.topic}, FromBeginning: fromBeginning, MaxWait: 100 * time.Millisecond,
		Logger: quietLogger(g.errOut),
		OnInvalid: func(_ string, partition int, offset int64, err error) {
			// Said, not dropped: a dead-letter topic, say, holds records that are not events.
			fmt.Fprintf(g.errOut, "cachectl tail: p%d@%d is not a change event, skipped: %v\n", partition, offset, err)
		},
		Sink: invalidation.SinkFuncs{
			Apply: func(_ string, partition int, evs []invalidation.Event) {
				for _, e := range evs {
					ej := eventJSON{Partition: partition, Offset: e.Offset, Key: e.Key, Version: e.Version, Op: e.Op.String(),
						Source: e.Source, CommittedAt: e.CommittedAt}
					if e.HasValue {
						v := string(e.Value)
						ej.Value = &v
					}
					select {
					case events <- ej:
					case <-ctx.Done():
						return
					}
				}
			},
			ResetFunc: func(topic string, partition int, reason string) {
				fmt.Fprintf(g.errOut, "cachectl tail: gap in %s/%d (%s); continuing at the log end\n", topic, partition, reason)
			},
		},
	})
	if err != nil {
		fmt.Fprintf(g.errOut, "cachectl tail: %v\n", err)
		return exitUsage
	}
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	defer func() { sub.Close(); <-done }()
	select {
	case <-sub.Ready():
	case <-time.After(g.timeout):
		fmt.Fprintf(g.errOut, "cachectl tail: Kafka at %s: topic %q not readable within %v\ncachectl: is Kafka running and reachable at %s? (--kafka-brokers)\n",
			strings.Join(g.brokers, ","), g.topic, g.timeout, strings.Join(g.brokers, ","))
		return exitUnavailable
	case <-ctx.Done():
		return exitOK
	}
	// With --until-end, tail is done when every partition's reader has passed the end offset
	// it had at the start; events at or past it are not printed.
	atEnd := func() bool {
		for _, p := range sub.Partitions() {
			if p.Topic == g.topic && p.Offset < ends[p.Partition] {
				return false
			}
		}
		return true
	}
	var poll <-chan time.Time
	if untilEnd {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		poll = t.C
	}
	for n := 0; count == 0 || n < count; {
		if untilEnd && atEnd() && len(events) == 0 { // in this order: atEnd first
			return exitOK
		}
		select {
		case <-poll:
		case e := <-events:
			if untilEnd && e.Offset >= ends[e.Partition] {
				continue
			}
			n++
			g.print(e, func(w io.Writer) {
				val := ""
				if e.Value != nil {
					val = " " + strconv.Quote(*e.Value)
				}
				fmt.Fprintf(w, "p%d@%d %s %s v%d%s\n", e.Partition, e.Offset, e.Op, e.Key, e.Version, val)
			})
		case <-ctx.Done():
			return exitOK
		}
	}
	return exitOK
}

func cmdHealth(ctx context.Context, g *globals, args []string) int {
	var ofWriter bool
	if _, err := g.sub("health", args, 0, 0, func(fs *flag.FlagSet) {
		fs.BoolVar(&ofWriter, "writer", false, "check the writer instead of the node")
	}); err != nil {
		return code(err)
	}
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	target, check := "node "+g.node, func() error {
		c, err := g.cache()
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Health(ctx)
	}
	if ofWriter {
		target, check = "writer "+g.writer, func() error {
			w, err := g.writerClient()
			if err != nil {
				return err
			}
			defer w.Close()
			return w.Health(ctx)
		}
	}
	if err := check(); err != nil {
		return g.fail(target, err)
	}
	g.print(map[string]any{"target": target, "serving": true}, func(w io.Writer) { fmt.Fprintf(w, "%s: SERVING\n", target) })
	return exitOK
}
