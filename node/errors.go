package node

import "errors"

// ErrClosed is returned by Start, Shutdown and Close on a node that was already shut down.
var ErrClosed = errors.New("node: closed")

// Errors the read path returns; service.go maps them to gRPC codes.
var (
	// errNotReady: a read before the node is positioned at the log end (Unavailable).
	errNotReady = errors.New("node is starting: not yet positioned at the log end of every partition")
	// errInvalidArgument: a key over the limits (InvalidArgument).
	errInvalidArgument = errors.New("invalid argument")
	// errOriginUnavailable: the origin load failed, and nothing stale could be served (Unavailable).
	errOriginUnavailable = errors.New("origin unavailable")
	// errOriginBehind: a load begun after the request arrived is still below its min_version
	// (Unavailable).
	errOriginBehind = errors.New("origin is behind the requested min_version")
	// errVersionless: the origin answered without a version, which cannot prove the request's
	// min_version (Unavailable).
	errVersionless = errors.New("the origin answered without a version, which cannot prove min_version")
	// errChanging: the key changed under every attempt to read it (Unavailable; retry).
	errChanging = errors.New("key keeps changing")
)
