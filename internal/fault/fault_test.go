package fault_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/cachewire/cachewire/internal/fault"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCutter: Cut closes the connections Dial opened and refuses new ones; Heal lets dials
// through again.
func TestCutter(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, conn); conn.Close() }()
		}
	}()
	ctx := context.Background()
	var c fault.Cutter
	conn, err := c.Dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c.Cut()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a cut connection: %v, want net.ErrClosed", err)
	}
	if _, err := c.Dial(ctx, "tcp", l.Addr().String()); err == nil {
		t.Fatal("dial through a cut network succeeded")
	}
	c.Heal()
	conn, err = c.Dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial after Heal: %v", err)
	}
	conn.Close()
}

// TestRefuse: every request fails until heal, or only the refused keys' requests.
func TestRefuse(t *testing.T) {
	k, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		return err
	}
	heal := fault.Refuse(k, "refused by the test")
	if err := ping(); err == nil {
		t.Fatal("a metadata request succeeded while every request is refused")
	}
	heal()
	heal()
	if err := ping(); err != nil {
		t.Fatalf("after heal: %v", err)
	}
	heal = fault.Refuse(k, "fetch refused by the test", kmsg.Fetch)
	defer heal()
	if err := ping(); err != nil {
		t.Fatalf("a metadata request with only fetches refused: %v", err)
	}
}
