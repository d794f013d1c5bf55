package redistier

import "errors"

// Errors callers test with errors.Is.
var (
	// ErrUnavailable wraps every failure to reach Redis, and is returned at once, without a call,
	// while the tier backs off after a failure. Callers carry on without L2.
	ErrUnavailable = errors.New("redistier: redis unavailable")
	// ErrClosed is returned by every call after Close.
	ErrClosed = errors.New("redistier: closed")
	// ErrEpochChanged is returned by Fill and FillMissing when the fill began in an older epoch
	// (it was not stored), and by Apply and ApplyBatch when Redis kept starting new epochs while
	// they ran (nothing was lost: apply the events again).
	ErrEpochChanged = errors.New("redistier: Redis started a new epoch")
)
