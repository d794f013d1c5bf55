package fault

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// Cutter is the network between one client and the servers it dials: Dial opens connections
// through it, Cut closes the open ones and refuses new ones, Heal lets dials through again. The
// zero value is ready to use and lets dials through. It is safe for concurrent use.
type Cutter struct {
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

// Dial opens a TCP connection to address (5 s timeout), unless the network is cut. It has the
// shape of node.Config.Kafka.Dial.
func (c *Cutter) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if c.isDown() {
		return nil, fmt.Errorf("dial %s: network cut", address)
	}
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		conn.Close()
		return nil, fmt.Errorf("dial %s: network cut", address)
	}
	if c.conns == nil {
		c.conns = map[net.Conn]bool{}
	}
	c.conns[conn] = true
	return &trackedConn{Conn: conn, c: c}, nil
}

func (c *Cutter) isDown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down
}

// Cut closes every connection Dial opened and refuses new dials until Heal.
func (c *Cutter) Cut() {
	c.mu.Lock()
	c.down = true
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	for conn := range conns {
		conn.Close()
	}
}

// Heal lets dials through again.
func (c *Cutter) Heal() {
	c.mu.Lock()
	c.down = false
	c.mu.Unlock()
}

// trackedConn forgets its connection in the Cutter when closed.
type trackedConn struct {
	net.Conn
	c    *Cutter
	once sync.Once
}

func (t *trackedConn) Close() error {
	t.once.Do(func() {
		t.c.mu.Lock()
		delete(t.c.conns, t.Conn)
		t.c.mu.Unlock()
	})
	return t.Conn.Close()
}
