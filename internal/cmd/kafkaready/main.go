// Command kafkaready waits until a Kafka broker answers a metadata request. scripts/kafka.sh uses
// it to decide that a broker it started is ready.
//
//	go run ./internal/cmd/kafkaready -brokers 127.0.0.1:19092 -timeout 90s
//
// With -min-brokers N it waits until the metadata lists at least N brokers (a cluster whose
// every broker has registered); with -in-sync, also until every partition's in-sync replicas
// are all its replicas (a broker that came back has caught up, so the next may be restarted).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:19092", "comma-separated bootstrap addresses")
	timeout := flag.Duration("timeout", 90*time.Second, "give up after this long")
	inSync := flag.Bool("in-sync", false, "wait until every partition has all its replicas in sync")
	minBrokers := flag.Int("min-brokers", 1, "wait until the metadata lists at least this many brokers")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(strings.Split(*brokers, ",")...), Timeout: 2 * time.Second}
	var lastErr error
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && *inSync {
			err = underReplicated(md)
		}
		if err == nil && len(md.Brokers) >= max(*minBrokers, 1) {
			fmt.Printf("kafkaready: %d broker(s) answer metadata at %s (cluster %s)\n", len(md.Brokers), *brokers, md.ClusterID)
			return
		}
		if err == nil {
			err = fmt.Errorf("metadata lists %d broker(s), want %d", len(md.Brokers), max(*minBrokers, 1))
		}
		lastErr = err
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "kafkaready: %s not ready after %s: %v\n", *brokers, *timeout, lastErr)
			os.Exit(1)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// underReplicated returns an error naming a partition whose in-sync replicas are fewer than its
// replicas, or nil when there is none.
func underReplicated(md *kafka.MetadataResponse) error {
	for _, t := range md.Topics {
		if t.Error != nil {
			return fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			if len(p.Isr) < len(p.Replicas) {
				return fmt.Errorf("partition %s/%d has %d of %d replicas in sync", t.Name, p.ID, len(p.Isr), len(p.Replicas))
			}
		}
	}
	return nil
}
