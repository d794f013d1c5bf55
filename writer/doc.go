// Package writer is cachewire's reference system of record: a key-value store in bbolt whose
// every write commits its record and an outbox row in one transaction, a relay that publishes
// the outbox to Kafka in commit order and deletes each row only after Kafka acked it, and
// WriterService over gRPC (Put, Delete, and Get, which is also the cache nodes' origin).
//
// A crash between the commit and the publish loses nothing: the next start publishes what the
// outbox still holds, and applying an event twice changes nothing. A row that can never be
// published is dead-lettered (kept in an outbox_dead bucket, or sent to Config.DeadLetterTopic)
// so that it never holds up the rows behind it.
//
// Files: config.go (Config), writer.go (lifecycle), commit.go (group commit), relay.go (the
// ordered relay and wait_published), deadletter.go, store.go (bbolt), service.go (gRPC),
// metrics.go.
//
//	w, err := writer.New(writer.Config{Brokers: brokers, Topic: "cachewire.users", DBPath: "data.db"})
//	if err := w.Start(); err != nil { ... }
//	<-ctx.Done()
//	w.Shutdown(context.Background()) // NOT_SERVING for DrainDelay, drain, give the relay time
//
// A Writer is safe for concurrent use. After Shutdown or Close every call returns ErrClosed.
package writer
