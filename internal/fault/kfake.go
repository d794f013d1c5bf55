package fault

import (
	"errors"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Refuse makes the in-process Kafka k fail every request with one of keys (every request, if keys
// is empty) until heal is called: the request gets no answer and its connection is closed, as if
// the broker were gone. The error k logs is reason. Heal is safe to call more than once and from
// any goroutine; afterwards the first request that reaches the control function removes it.
func Refuse(k *kfake.Cluster, reason string, keys ...kmsg.Key) (heal func()) {
	var refusing atomic.Bool
	refusing.Store(true)
	err := errors.New(reason)
	control := func(kmsg.Request) (kmsg.Response, error, bool) {
		if refusing.Load() {
			k.KeepControl()
			return nil, err, true
		}
		k.DropControl()
		return nil, nil, false
	}
	if len(keys) == 0 {
		k.Control(control)
	}
	for _, key := range keys {
		k.ControlKey(int16(key), control)
	}
	return func() { refusing.Store(false) }
}
