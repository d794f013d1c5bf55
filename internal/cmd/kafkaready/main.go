// Command kafkaready waits until a Kafka broker answers a metadata request. scripts/kafka.sh uses
// it to decide that a broker it started is ready.
//
//	go run ./internal/cmd/kafkaready -brokers 127.0.0.1:19092 -timeout 90s
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
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(strings.Split(*brokers, ",")...), Timeout: 2 * time.Second}
	var lastErr error
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && len(md.Brokers) > 0 {
			fmt.Printf("kafkaready: %d broker(s) answer metadata at %s (cluster %s)\n", len(md.Brokers), *brokers, md.ClusterID)
			return
		}
		if err == nil {
			err = fmt.Errorf("metadata lists no brokers")
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
