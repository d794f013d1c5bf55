package writer

import "errors"

// ErrClosed is returned by Start, Put, Delete, Get, Shutdown and Close once the writer was shut
// down (Shutdown or Close).
var ErrClosed = errors.New("writer: closed")
