package invalidation

import "errors"

// ErrClosed is returned by every call on a Publisher, Subscriber or GroupApplier after Close
// (and by Run when Close came first).
var ErrClosed = errors.New("invalidation: closed")

// ErrInvalidEvent is wrapped by every error that Decode and Validate return for a bad event.
var ErrInvalidEvent = errors.New("invalidation: invalid event")

// Errors a key or value check returns; each is also reported wrapped in ErrInvalidEvent for events.
var (
	ErrEmptyKey      = errors.New("invalidation: key is empty")
	ErrKeyTooLong    = errors.New("invalidation: key is longer than the limit")
	ErrKeyNotUTF8    = errors.New("invalidation: key is not valid UTF-8")
	ErrValueTooLarge = errors.New("invalidation: value is larger than the limit")
	ErrZeroVersion   = errors.New("invalidation: version must be greater than zero")
)
