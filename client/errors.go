package client

import "errors"

// Errors callers test with errors.Is. Every error a method returns for a gRPC failure matches
// exactly one of them, or none for other codes; errors.As with *Error gives the code and message.
var (
	// ErrNotFound: the key has no value (writer Get of a deleted or never-written key).
	ErrNotFound = errors.New("client: not found")
	// ErrInvalidArgument: the request broke a limit or was malformed; retrying will not help.
	ErrInvalidArgument = errors.New("client: invalid argument")
	// ErrUnavailable: the server, or what it depends on, cannot answer now; retry later.
	ErrUnavailable = errors.New("client: unavailable")
	// ErrResourceExhausted: the server is at its concurrency limit, or this client at its own
	// (requests per second or in flight); back off.
	ErrResourceExhausted = errors.New("client: resource exhausted")
	// ErrUnauthenticated: the server identifies every caller, and this one sent no known bearer
	// token nor a client certificate.
	ErrUnauthenticated = errors.New("client: unauthenticated")
	// ErrPermissionDenied: this client may not call the method (one that changes state).
	ErrPermissionDenied = errors.New("client: permission denied")
)
