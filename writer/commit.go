package writer

import (
	"context"
)

// submit queues a write for the group committer and waits for its commit.
func (w *Writer) submit(ctx context.Context, wr *write) error {
	wr.done = make(chan struct{})
	select {
	case w.writes <- wr:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.ctx.Done():
		return ErrClosed
	}
	// Once queued the write will be committed or fail; wait for the answer even if ctx ends,
	// so the caller never gets an error for a write that did commit.
	<-wr.done
	return wr.err
}

// commitLoop is the group committer: it takes every write waiting and commits them in one
// transaction (one fsync), so throughput grows with concurrency instead of collapsing to one
// fsync per request.
func (w *Writer) commitLoop() {
	batch := make([]*write, 0, 256)
	for {
		batch = batch[:0]
		select {
		case wr := <-w.writes:
			batch = append(batch, wr)
		case <-w.ctx.Done():
			w.failQueued()
			return
		}
	drain:
		for len(batch) < cap(batch) {
			select {
			case wr := <-w.writes:
				batch = append(batch, wr)
			default:
				break drain
			}
		}
		err := w.store.commit(batch, w.cfg.WriterID, w.eventValueMax())
		if err != nil {
			w.log.Error("commit failed", "writes", len(batch), "err", err)
		} else {
			w.depth.Add(int64(len(batch)))
			w.m.batchSize.Observe(float64(len(batch)))
		}
		for _, wr := range batch {
			wr.err = err
			close(wr.done)
		}
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

func (w *Writer) failQueued() {
	for {
		select {
		case wr := <-w.writes:
			wr.err = ErrClosed
			close(wr.done)
		default:
			return
		}
	}
}
