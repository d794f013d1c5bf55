package main

import (
	"io"
	"log/slog"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func protojsonMarshal(m proto.Message) ([]byte, error) {
	return protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(m)
}

// quietLogger logs only errors, to stderr, so tail's output stays the events.
func quietLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelError}))
}
