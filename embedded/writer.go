package embedded

import (
	"errors"
	"path/filepath"

	"github.com/cachewire/cachewire/writer"
)

// startWriter starts the writer on WriterAddr and its database.
func (c *Cluster) startWriter() (*writer.Writer, error) {
	wc := writer.Config{WriterID: "embedded-writer", DBPath: filepath.Join(c.dir, "writer.db"),
		GRPCAddr: c.WriterAddr, HTTPAddr: c.httpAddr(), Brokers: c.Brokers, Kafka: c.cfg.Kafka, Topic: c.Topic, CreateTopic: true,
		TopicPartitions: c.cfg.Partitions, TopicReplication: max(c.cfg.Replication, 1), Logger: c.cfg.Logger.With("component", "writer")}
	if c.cfg.Writer != nil {
		c.cfg.Writer(&wc)
	}
	w, err := writer.New(wc)
	if err != nil {
		return nil, err
	}
	if err := w.Start(); err != nil {
		w.Close()
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		w.Close()
		return nil, ErrClosed
	}
	c.writer = w
	return w, nil
}

// Writer returns the writer, or nil while it is killed.
func (c *Cluster) Writer() *writer.Writer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writer
}

// KillWriter stops the writer at once, as a crash, and returns how many committed changes it
// left unpublished in its outbox: they are published when it restarts. Killing a killed writer
// returns 0.
func (c *Cluster) KillWriter() (unpublished int64) {
	c.mu.Lock()
	w := c.writer
	c.writer = nil
	c.mu.Unlock()
	if w == nil {
		return 0
	}
	unpublished = w.OutboxDepth()
	w.Close()
	return unpublished
}

// RestartWriter starts the killed writer again on its database and gRPC address (Config.Writer
// runs again). It fails if the writer is running, and with ErrClosed after Close.
func (c *Cluster) RestartWriter() error {
	c.mu.Lock()
	closed, running := c.closed, c.writer != nil
	c.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case running:
		return errors.New("embedded: the writer is running")
	}
	_, err := c.startWriter()
	return err
}
