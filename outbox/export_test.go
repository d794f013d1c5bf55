package outbox

// SetAfterPublish installs a hook that runs between Kafka's ack and the delete.
func (r *Relay) SetAfterPublish(f func()) { r.afterPublish = f }
